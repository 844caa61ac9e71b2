"""Server logging: uvicorn's own format, with every secret masked and query strings left out.

uvicorn logs no headers, but its access log prints the request path with its query string, and error
records may carry exception text. `RedactFilter` sits on every handler: it drops the query string from
access records (a client might put a key there) and replaces every known secret value, plain or
percent-encoded, with `***` in messages and tracebacks.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import quote, quote_plus, unquote


class RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self._plain = [s for s in secrets if s]
        variants = {v for s in self._plain for v in (s, quote(s), quote(s, safe=""), quote_plus(s))}
        self._secrets = sorted(variants, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # (client, method, path with query string, HTTP version, status): the formatter needs the tuple.
            client, method, path, version, status = args
            path = str(path).split("?", 1)[0]
            decoded = unquote(path)  # however the client encoded it
            if any(s in decoded for s in self._plain):
                path = quote(self._clean(decoded), safe="/*")
            record.args = tuple(self._clean(a) if isinstance(a, str) else a for a in (client, method, path, version,
                                                                                         status))
        else:
            record.msg = self._clean(record.getMessage())
            record.args = None
        if record.exc_info:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


def log_config(secrets: list[str], level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn and ragcli's server messages, secrets masked."""
    from uvicorn.config import LOGGING_CONFIG  # noqa: TID253 - ragcli.serve is imported only by `serve`

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactFilter, "secrets": list(secrets)}}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["loggers"]["ragcli"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    for name in ("uvicorn", "uvicorn.access"):
        config["loggers"][name]["level"] = level.upper()
    return config
