"""`ragcli serve` checks that need no model: the key, where the server may listen, log redaction,
and the missing extra. The server itself is tested end to end in test_serve.py."""

from __future__ import annotations

import logging
import sys

import pytest

from ragcli.config import Secret
from ragcli.errors import ConfigError
from ragcli.serve.auth import KeyCheck, check_bind, is_loopback
from ragcli.serve.logs import RedactFilter

KEY = "canary+key/" + "s3cr3t" * 6  # 47 bytes; '+' and '/' change when percent-encoded


def test_key_check_accepts_both_headers_and_nothing_else():
    check = KeyCheck(Secret(KEY))
    raw = KEY.encode()
    assert check.allows([(b"x-api-key", raw)])
    assert check.allows([(b"authorization", b"Bearer " + raw)])
    assert check.allows([(b"authorization", b"bearer  " + raw + b" ")])
    assert check.allows([(b"x-api-key", b"wrong"), (b"authorization", b"Bearer " + raw)])
    for headers in ([], [(b"x-api-key", b"")], [(b"x-api-key", raw[:-1])], [(b"x-api-key", raw + b"x")],
                    [(b"x-api-key", "é".encode() + raw)], [(b"x-api-key", b"\xff\xfe")],
                    [(b"authorization", b"Basic " + raw)], [(b"authorization", raw)],
                    [(b"x-other", raw)]):
        assert not check.allows(headers), headers


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("::", False), ("192.168.1.10", False), ("example.com", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_bind_rules():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", Secret(KEY))
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 32") as err:
        check_bind("127.0.0.1", Secret("short-key"))
    assert "short-key" not in str(err.value)


def test_non_loopback_host_without_key_is_refused_before_loading(cli):
    result = cli("serve", "--host", "0.0.0.0", "--models-dir", "no-such-folder")
    assert result.exit_code == 1
    assert "Refusing to listen on 0.0.0.0 without an API key" in result.stderr
    assert "RAGCLI_API_KEY" in result.stderr


def test_key_from_dotenv_is_read_and_never_shown(cli, tmp_path):
    (tmp_path / "work" / ".env").write_text("RAGCLI_API_KEY=tiny-dotenv-key\n", encoding="utf-8")
    result = cli("serve", "--host", "0.0.0.0")
    assert result.exit_code == 1
    assert "RAGCLI_API_KEY is 15 bytes long" in result.stderr
    assert "tiny-dotenv-key" not in result.output


def test_the_key_is_not_a_flag(cli):
    assert cli("serve", "--api-key", KEY).exit_code == 2


def test_missing_extra_names_the_install_command(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = cli("serve")
    assert result.exit_code == 1
    assert "pip install 'ragcli[serve]'" in result.stderr


def _record(name: str, msg: str, args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_access_records_lose_query_strings_and_secrets():
    from urllib.parse import quote

    f = RedactFilter([KEY])
    record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d',
                     ("127.0.0.1:5000", "GET", f"/health?api_key={quote(KEY, safe='')}", "1.1", 401))
    assert f.filter(record)
    assert record.args == ("127.0.0.1:5000", "GET", "/health", "1.1", 401)
    for path in (f"/{KEY}", f"/{quote(KEY)}", f"/{quote(KEY, safe='')}", "/" + KEY.replace("a", "%61")):
        record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", path, "1.1", 404))
        f.filter(record)
        assert record.args[2] == "/***", path


def test_messages_and_tracebacks_are_redacted():
    from urllib.parse import quote_plus

    f = RedactFilter([KEY])
    record = _record("ragcli.serve", "failed with %s and %s", (KEY, quote_plus(KEY)))
    try:
        raise RuntimeError(f"boom {KEY}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    f.filter(record)
    formatted = logging.Formatter().format(record)
    assert KEY not in formatted and quote_plus(KEY) not in formatted
    assert "failed with *** and ***" in formatted and "RuntimeError: boom ***" in formatted
