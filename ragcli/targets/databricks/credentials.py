"""Databricks credentials and index coordinates, read from the settings and checked before any call.

Credentials come from DATABRICKS_TOKEN, DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET (a service
principal, OAuth M2M; preferred when both kinds are set) or a `~/.databrickscfg` profile
(DATABRICKS_CONFIG_PROFILE, else its DEFAULT section), never from the command line. They are passed to
the client explicitly, so no mlflow / databricks-sdk discovery runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ragcli.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_NAME_PART = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class DatabricksConfig:
    """Where the index lives and how to authenticate. Secret fields never appear in `repr`."""

    host: str
    index: str
    endpoint: str | None
    auth: str  # "pat" | "service-principal"
    credential_source: str  # for messages: which variables (or profile) the credentials came from
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    batch_rows: int = 200
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    ca_bundle: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.client_secret) if s]


def check_host(raw: str, variable: str) -> str:
    host = raw.strip().rstrip("/")
    parts = urlsplit(host)
    example = "e.g. https://adb-1234567890123456.7.azuredatabricks.net"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{variable} must be the workspace URL starting with https:// ({example}).")
    if parts.username or parts.password:
        raise ConfigError(f"{variable} must not contain credentials; put the token in DATABRICKS_TOKEN.")
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{variable} must be the workspace URL only, without a path or query ({example}).")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{variable} uses http:// for {parts.hostname}: tokens would travel unencrypted. Use https:// "
            "(plain http is accepted only for a local emulator on 127.0.0.1, localhost or ::1)."
        )
    return host


def check_uc_name(name: str) -> str:
    parts = name.split(".")
    if len(parts) != 3 or not all(_NAME_PART.match(p) for p in parts):
        raise ConfigError(
            f"RAGCLI_DATABRICKS_INDEX={name!r} is not a three-part Unity Catalog name; "
            "set it to catalog.schema.index (letters, digits, _ and -)."
        )
    return name


def _read_profile(name: str | None) -> dict[str, str]:
    """The `~/.databrickscfg` section `name` (or DEFAULT when no name is given and it exists)."""
    import configparser

    path = Path.home() / ".databrickscfg"
    if not path.is_file():
        if name:
            raise ConfigError(f"DATABRICKS_CONFIG_PROFILE={name} is set but {path} does not exist.")
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as an INI file ({type(exc).__name__}).") from None
    section = name or "DEFAULT"
    if section == "DEFAULT":
        values = dict(parser.defaults())
    elif parser.has_section(section):
        values = dict(parser.items(section))
    else:
        raise ConfigError(f"Profile {name!r} (DATABRICKS_CONFIG_PROFILE) is not in {path}.")
    return {k: v.strip() for k, v in values.items() if v and v.strip()}


def resolve_config(settings: Settings, *, need_endpoint: bool) -> DatabricksConfig:
    """Check the Databricks settings; a missing or bad one is a `ConfigError` naming the variable."""
    token = settings.databricks_token.get() if settings.databricks_token else None
    client_id = settings.databricks_client_id or None
    client_secret = settings.databricks_client_secret.get() if settings.databricks_client_secret else None
    host_raw, host_var = settings.databricks_host, "DATABRICKS_HOST"
    source = ""
    if client_id and client_secret:
        auth, source = "service-principal", "the service principal in DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET"
    elif client_id or client_secret:
        missing = "DATABRICKS_CLIENT_SECRET" if client_id else "DATABRICKS_CLIENT_ID"
        raise ConfigError(f"{missing} is not set: a service principal needs both DATABRICKS_CLIENT_ID and "
                          "DATABRICKS_CLIENT_SECRET.")
    elif token:
        auth, source = "pat", "the token in DATABRICKS_TOKEN"
    else:
        profile = _read_profile(settings.databricks_profile)
        label = settings.databricks_profile or "DEFAULT"
        if profile.get("client_id") and profile.get("client_secret"):
            auth, client_id, client_secret = "service-principal", profile["client_id"], profile["client_secret"]
            source = f"the service principal of profile {label} in ~/.databrickscfg"
        elif profile.get("token"):
            auth, token = "pat", profile["token"]
            source = f"the token of profile {label} in ~/.databrickscfg"
        else:
            raise ConfigError(
                "No Databricks credentials: set DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID and "
                "DATABRICKS_CLIENT_SECRET (a service principal, recommended), or DATABRICKS_CONFIG_PROFILE "
                "(a profile in ~/.databrickscfg). Tokens are never accepted on the command line."
            )
        if not host_raw and profile.get("host"):
            host_raw, host_var = profile["host"], f"host of profile {label} in ~/.databrickscfg"
    if not host_raw:
        raise ConfigError("DATABRICKS_HOST is not set: set it to the workspace URL, "
                          "e.g. https://adb-1234567890123456.7.azuredatabricks.net")
    host = check_host(host_raw, host_var)
    if not settings.databricks_index:
        raise ConfigError("RAGCLI_DATABRICKS_INDEX is not set: set it to the index's three-part name "
                          "catalog.schema.index (ragcli ingest --target databricks creates it).")
    index = check_uc_name(settings.databricks_index)
    endpoint = settings.databricks_endpoint or None
    if need_endpoint and not endpoint:
        raise ConfigError("RAGCLI_DATABRICKS_ENDPOINT is not set: set it to the name of the Vector Search "
                          "endpoint that serves (or will serve) the index.")
    return DatabricksConfig(
        host=host, index=index, endpoint=endpoint, auth=auth, credential_source=source, token=token,
        client_id=client_id, client_secret=client_secret,
        batch_rows=int(getattr(settings, "databricks_batch_rows", 200)),
        timeout=float(getattr(settings, "databricks_timeout", 60.0)),
        retries=int(getattr(settings, "databricks_retries", 5)),
        backoff=float(getattr(settings, "databricks_backoff", 1.0)),
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
    )
