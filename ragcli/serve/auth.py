"""The API key: where the server may listen without one, and how a request's key is checked.

The key comes from RAGCLI_API_KEY (environment or .env, through `ragcli.config`), never from a flag.
A request may send it as `X-Api-Key: KEY` or `Authorization: Bearer KEY`. Keys are compared as
SHA-256 digests of their bytes with `hmac.compare_digest`: constant time, and a header holding
non-ASCII bytes is simply a wrong key (comparing `str`s with non-ASCII characters raises).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING

from ragcli.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Secret

MIN_KEY_BYTES = 32
KEY_HINT = "Generate one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\""


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_bind(host: str, key: Secret | None) -> None:
    """Refuse a short key, and a non-loopback address without a key."""
    if key:
        size = len(key.get().encode("utf-8"))
        if size < MIN_KEY_BYTES:
            raise ConfigError(f"RAGCLI_API_KEY is {size} bytes long; use at least {MIN_KEY_BYTES}. {KEY_HINT}")
    elif not is_loopback(host):
        raise ConfigError(
            f"Refusing to listen on {host} without an API key: anyone who can reach it could use the server. "
            f"Set RAGCLI_API_KEY (environment or .env), or listen on 127.0.0.1. {KEY_HINT}"
        )


class KeyCheck:
    """Checks the key headers of a request against the configured key."""

    def __init__(self, key: Secret) -> None:
        self._digest = hashlib.sha256(key.get().encode("utf-8")).digest()

    def allows(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """`headers` as ASGI gives them: lower-case names, raw bytes."""
        offered = []
        for name, value in headers:
            if name == b"x-api-key":
                offered.append(value.strip())
            elif name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    offered.append(token.strip())
        ok = False
        for candidate in offered:  # every candidate is compared: no early exit
            ok |= hmac.compare_digest(hashlib.sha256(candidate).digest(), self._digest)
        return ok
