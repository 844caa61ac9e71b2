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


def target_class(name: str) -> type[Target]:
    try:
        module, cls = _TARGETS[name]
    except KeyError:
        raise ConfigError(f"Unknown target {name!r}; use one of: {', '.join(_TARGETS)}.") from None
    return getattr(importlib.import_module(module), cls)


def open_target(settings: Settings) -> Target:
    """The configured target (`settings.target`), not yet opened or locked."""
    return target_class(settings.target)(settings)
