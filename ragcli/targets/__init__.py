"""Index kinds behind one contract (`ragcli.targets.base.Target`), and the one place that maps a
target name to its class. Implementations are imported only when asked for, so naming a target that
needs an optional extra costs nothing until it is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ragcli.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.targets.base import Target

# target name -> (module, class). The only table of target names outside the settings' choices.
_TARGETS = {
    "local": ("ragcli.targets.local", "LocalTarget"),
    "databricks": ("ragcli.targets.databricks.target", "DatabricksTarget"),
}
# (target name, index kind) -> (module, class): kinds of index a target offers besides its default
# (`--index-kind`, RAGCLI_DATABRICKS_INDEX_KIND). Same `kind` and capabilities' shape as the default.
_INDEX_KINDS = {
    ("databricks", "delta-sync"): ("ragcli.targets.delta_sync.target", "DeltaSyncTarget"),
}


def target_class(name: str, index_kind: str | None = None) -> type[Target]:
    """The class of target `name`; `index_kind` picks another kind of index of that target (None or
    an unknown kind: the target's default, e.g. Direct Access for databricks)."""
    try:
        module, cls = _INDEX_KINDS.get((name, index_kind or "")) or _TARGETS[name]
    except KeyError:
        raise ConfigError(f"Unknown target {name!r}; use one of: {', '.join(_TARGETS)}.") from None
    return getattr(importlib.import_module(module), cls)


def settings_target_class(settings: Settings) -> type[Target]:
    """The class of the configured target (`settings.target` and its index kind)."""
    return target_class(settings.target, settings.databricks_index_kind)


def open_target(settings: Settings) -> Target:
    """The configured target (`settings.target`, and `settings.databricks_index_kind`), not yet opened
    or locked."""
    return settings_target_class(settings)(settings)
