"""Tests for ragcli.loaders: discovery and hostile inputs (docs/failure-modes.md §2, §5 I1-I9).

Every hostile file is generated here (zipfile, bytes literals): nothing binary is committed. Every error test
checks the exception type and that the message names the file and the reason, because ingest reports
failures by that message and goes on with the other files.
"""

from __future__ import annotations

import io
import os
import random
import struct
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from ragcli import loaders
from ragcli.errors import ConfigError, DocumentError, EmptyDocumentError, NoDocumentsError
from ragcli.loaders import SUPPORTED_SUFFIXES, LoaderLimits, SourceFile, clean_markdown, discover, load_text

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>"
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/></Relationships>'
)


def document_xml(body: str, prolog: str = "") -> str:
    """A WordprocessingML main part around `body` (already XML)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
        f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>'
    )


def para(text: str) -> str:
    return f"<w:p><w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"


VALID_BODY = (
    para("Quarterly report")
    + para("Revenue grew   ")  # trailing spaces: must be stripped
    + "<w:p/><w:p/><w:p/><w:p/>"  # empty paragraphs: blank runs must collapse
    + "<w:tbl>"
    + "<w:tr><w:tc>" + para("Cell A1") + "</w:tc><w:tc>" + para("Cell B1") + "</w:tc></w:tr>"
    + "<w:tr><w:tc>" + para("Cell A2") + "</w:tc><w:tc>" + para("Cell B2") + "</w:tc></w:tr>"
    + "</w:tbl>"
    + "<w:p><w:r><w:t>Closing</w:t><w:tab/><w:t>tabbed</w:t><w:br/><w:t>next line</w:t></w:r></w:p>"
)


def write_docx(
    path: Path,
    document: str | bytes | None = None,
    *,
    main_name: str = "word/document.xml",
    extra: dict[str, str | bytes] | None = None,
) -> Path:
    """Write a minimal .docx: content types, package rels, the main part (unless None) and `extra` parts."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("_rels/.rels", RELS)
        if document is not None:
            zf.writestr(zipfile.ZipInfo(main_name), document, compress_type=zipfile.ZIP_DEFLATED)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def write_spaces_bomb(path: Path, spaces: int) -> Path:
    """A .docx whose word/document.xml is `spaces` bytes of blanks inside a w:t, written in chunks so the
    fixture itself stays small in memory; deflate turns ~60 MB of spaces into ~60 KB."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t xml:space="preserve">'
    ).encode()
    tail = b"</w:t></w:r></w:p></w:body></w:document>"
    block = b" " * (1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("_rels/.rels", RELS)
        info = zipfile.ZipInfo("word/document.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=False) as out:
            out.write(head)
            left = spaces
            while left > 0:
                out.write(block[: min(left, len(block))])
                left -= len(block)
            out.write(tail)
    return path


def patch_entry(
    data: bytes, name: str, *, size: int | None = None, crc: int | None = None, flags: int = 0
) -> bytes:
    """Rewrite entry `name` in both its local file header and its central-directory record, so the archive
    lies consistently: the uncompressed size, the CRC-32, and extra general-purpose flag bits (zipfile's
    writer clears flag bits, so they can only be set by patching)."""
    buf = bytearray(data)
    encoded = name.encode()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        offset = zf.getinfo(name).header_offset

    def patch(flags_at: int, crc_at: int, size_at: int) -> None:
        if flags:
            struct.pack_into("<H", buf, flags_at, struct.unpack_from("<H", buf, flags_at)[0] | flags)
        if crc is not None:
            struct.pack_into("<I", buf, crc_at, crc)
        if size is not None:
            struct.pack_into("<I", buf, size_at, size)

    # Local file header: signature(4) version(2) flags(2) method(2) time(2) date(2) crc(4) csize(4) usize(4)
    # name_len(2) extra_len(2) name.
    assert buf[offset : offset + 4] == b"PK\x03\x04"
    assert buf[offset + 30 : offset + 30 + len(encoded)] == encoded
    patch(offset + 6, offset + 14, offset + 22)
    # Central directory record: signature(4) made_by(2) version(2) flags(2) method(2) time(2) date(2) crc(4)
    # csize(4) usize(4) name_len(2) ... name at 46.
    found = False
    pos = buf.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", buf, pos + 28)[0]
        if bytes(buf[pos + 46 : pos + 46 + name_len]) == encoded:
            patch(pos + 8, pos + 16, pos + 24)
            found = True
        pos = buf.find(b"PK\x01\x02", pos + 4)
    assert found
    return bytes(buf)


def assert_error(excinfo: pytest.ExceptionInfo[DocumentError], path: Path, *fragments: str) -> None:
    """The message names the file and every fragment of the reason."""
    message = str(excinfo.value)
    assert str(path) in message, message
    assert excinfo.value.path == str(path)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def measure(func: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, float, int]:
    """Run `func` under tracemalloc: (its result or the exception it raised, seconds, traced peak bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result: object = func(*args, **kwargs)
    except Exception as exc:  # returned for the caller to assert on
        result = exc
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


# --------------------------------------------------------------------------------------------- .docx


def test_valid_docx_paragraphs_table_and_header(tmp_path: Path) -> None:
    header = f'<w:hdr xmlns:w="{W_NS}">{para("Company Confidential")}</w:hdr>'
    path = write_docx(tmp_path / "report.docx", document_xml(VALID_BODY), extra={"word/header1.xml": header})
    text = load_text(path)
    for expected in ("Company Confidential", "Quarterly report", "Revenue grew", "Cell A1", "Cell B2",
                     "Closing\ttabbed\nnext line"):
        assert expected in text
    assert text.index("Cell A1") < text.index("Cell B1") < text.index("Cell A2")
    assert "\n\n\n" not in text
    assert all(line == line.rstrip() for line in text.split("\n"))
    assert text == text.strip()


def test_docx_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "REPORT.DOCX", document_xml(para("upper case suffix")))
    assert load_text(path) == "upper case suffix"


def test_text_file_renamed_docx(tmp_path: Path) -> None:
    path = tmp_path / "notes.docx"
    path.write_text("just some text, not a zip\n")
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert type(excinfo.value) is DocumentError
    assert_error(excinfo, path, "not a valid .docx (not a zip archive)")


def test_truncated_docx(tmp_path: Path) -> None:
    whole = write_docx(tmp_path / "whole.docx", document_xml(VALID_BODY)).read_bytes()
    path = tmp_path / "truncated.docx"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "not a valid .docx (damaged zip:")


def test_ole_header_is_encrypted_or_legacy(tmp_path: Path) -> None:
    path = tmp_path / "secret.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "encrypted or legacy Word (.doc) file: not supported",
                 "save it as .docx without a password")


def test_zip_without_main_part(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "hollow.docx", None, extra={"word/styles.xml": "<styles/>"})
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "missing main document part word/document.xml")


def test_backslash_part_name(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "backslash.docx", document_xml(para("hi")), main_name="word\\document.xml")
    with zipfile.ZipFile(path) as zf:
        assert "word\\document.xml" in zf.namelist()  # the fixture really holds a backslash name
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "missing main document part word/document.xml", "backslashes")


def test_spreadsheet_renamed_docx_gets_a_hint(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "sheet.docx", None, extra={"xl/workbook.xml": "<workbook/>"})
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "missing main document part", "Excel workbook")


def test_empty_body_docx(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "empty.docx", document_xml("<w:p/><w:p><w:r><w:t>   </w:t></w:r></w:p>"))
    with pytest.raises(EmptyDocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "empty document: nothing to index")


def test_zero_byte_docx_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.docx"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "empty document")


def test_malformed_xml_in_main_part(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "broken.docx", "<w:document><w:body><w:p>")
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "not a valid .docx", "word/document.xml is not well-formed XML")


def test_encrypted_zip_entry(tmp_path: Path) -> None:
    """Flag bit 0 marks an entry as encrypted; zipfile then wants a password (RuntimeError)."""
    plain = write_docx(tmp_path / "plain.docx", document_xml(para("secret"))).read_bytes()
    path = tmp_path / "locked.docx"
    path.write_bytes(patch_entry(plain, "word/document.xml", flags=0x1))
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "encrypted zip entries: not supported")


@pytest.fixture(scope="module")
def spaces_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 MB of spaces in word/document.xml, compressed to well under a megabyte."""
    path = write_spaces_bomb(tmp_path_factory.mktemp("bomb") / "bomb.docx", 60 * 1024 * 1024)
    assert path.stat().st_size < 1024 * 1024
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("word/document.xml").file_size > 60 * 1024 * 1024
    return path


# The bomb holds 60 MB; the loader should never hold more than a few chunks of it. Observed peaks are under
# 1 MB (tracemalloc), so 8 MB leaves room for interpreter noise while still catching a full decompression.
PEAK_LIMIT = 8 * 1024 * 1024
BOMB_LIMITS = LoaderLimits(max_docx_part_bytes=8 * 1024 * 1024, max_docx_total_bytes=16 * 1024 * 1024)


@pytest.mark.timeout(60)
def test_zip_bomb_rejected_by_declared_size(spaces_bomb: Path) -> None:
    result, seconds, peak = measure(load_text, spaces_bomb, limits=BOMB_LIMITS)
    assert isinstance(result, DocumentError), result
    assert "too large when decompressed" in str(result) and "limit" in str(result)
    assert "declares" in str(result)
    assert str(spaces_bomb) in str(result)
    assert seconds < 5
    assert peak < PEAK_LIMIT


@pytest.mark.timeout(60)
def test_zip_bomb_default_limits_rejects_above_50_mib(spaces_bomb: Path) -> None:
    with pytest.raises(DocumentError) as excinfo:
        load_text(spaces_bomb)
    assert_error(excinfo, spaces_bomb, "too large when decompressed", f"{50 * 1024 * 1024:,}")


@pytest.mark.timeout(60)
def test_zip_bomb_streaming_cap_holds_when_declared_sizes_lie(
    spaces_bomb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the declared-size check were fooled, the stream through zf.open() still stops at the cap."""
    monkeypatch.setattr(loaders, "_check_declared_sizes", lambda *args: None)
    result, seconds, peak = measure(load_text, spaces_bomb, limits=BOMB_LIMITS)
    assert isinstance(result, DocumentError), result
    assert "too large when decompressed" in str(result) and "exceeds the limit" in str(result)
    assert seconds < 5
    assert peak < PEAK_LIMIT


@pytest.mark.timeout(60)
def test_zip_bomb_with_hand_patched_lying_size(spaces_bomb: Path, tmp_path: Path) -> None:
    """The local header and central directory both declare 1 KB for 60 MB of data.

    CPython's zipfile stops decompressing at the declared size and then fails the CRC check, so the lie
    surfaces as a damaged zip after ~1 KB, not as 60 MB in memory.
    """
    path = tmp_path / "liar.docx"
    path.write_bytes(patch_entry(spaces_bomb.read_bytes(), "word/document.xml", size=1024))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("word/document.xml").file_size == 1024
    result, seconds, peak = measure(load_text, path, limits=BOMB_LIMITS)
    assert isinstance(result, DocumentError), result
    assert str(path) in str(result)
    assert "damaged zip" in str(result) and "CRC" in str(result)
    assert seconds < 5
    assert peak < PEAK_LIMIT


@pytest.mark.timeout(60)
def test_zip_bomb_lying_size_with_matching_crc(spaces_bomb: Path, tmp_path: Path) -> None:
    """Same lie, but the CRC is forged to match the first 1 KB: only that much is read, so the main part is
    truncated XML."""
    with zipfile.ZipFile(spaces_bomb) as zf, zf.open("word/document.xml") as stream:
        first = stream.read(1024)
    path = tmp_path / "forged.docx"
    path.write_bytes(
        patch_entry(spaces_bomb.read_bytes(), "word/document.xml", size=1024, crc=zlib.crc32(first))
    )
    result, seconds, peak = measure(load_text, path, limits=BOMB_LIMITS)
    assert isinstance(result, DocumentError), result
    assert "not well-formed XML" in str(result)
    assert seconds < 5
    assert peak < PEAK_LIMIT


def test_total_decompressed_cap_across_headers(tmp_path: Path) -> None:
    """Each header part is under the per-part cap, together they are over the total cap."""
    blank_header = f'<w:hdr xmlns:w="{W_NS}">' + " " * (1024 * 1024) + "</w:hdr>"
    extra: dict[str, str | bytes] = {f"word/header{i}.xml": blank_header for i in range(1, 5)}
    path = write_docx(tmp_path / "headers.docx", document_xml(para("x")), extra=extra)
    limits = LoaderLimits(max_docx_part_bytes=2 * 1024 * 1024, max_docx_total_bytes=3 * 1024 * 1024)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path, limits=limits)
    assert_error(excinfo, path, "too large when decompressed", f"{3 * 1024 * 1024:,}")


def test_too_many_zip_entries(tmp_path: Path) -> None:
    extra: dict[str, str | bytes] = {f"word/media/x{i}.bin": b"" for i in range(20)}
    path = write_docx(tmp_path / "many.docx", document_xml(para("x")), extra=extra)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path, limits=LoaderLimits(max_zip_entries=10))
    assert_error(excinfo, path, "too many zip entries", "limit 10")
    assert load_text(path) == "x"  # under the default cap the same file is fine


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "prolog",
    [
        # billion laughs
        '<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
        + "]>",
        # quadratic blowup: one large entity referenced many times
        '<!DOCTYPE q [<!ENTITY a "' + "a" * 50_000 + '">]>',
        # external entity (XXE)
        '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    ],
    ids=["billion-laughs", "quadratic-blowup", "external-entity"],
)
def test_xml_entity_attacks_refused(tmp_path: Path, prolog: str) -> None:
    ref = "&lol9;" if "lolz" in prolog else ("&a;" * 1000 if "ENTITY a" in prolog else "&xxe;")
    path = write_docx(tmp_path / "entities.docx", document_xml(para(ref), prolog))
    start = time.perf_counter()
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert time.perf_counter() - start < 5
    assert_error(excinfo, path, "refused: the document declares", "XML entities", "possible entity-expansion attack")


@pytest.mark.timeout(20)
def test_entity_bomb_in_header_part_refused(tmp_path: Path) -> None:
    """docx2txt also parses headers and footers, so they are defused too."""
    footer = ('<?xml version="1.0"?><!DOCTYPE f [<!ENTITY e "boom">]>'
              f'<w:ftr xmlns:w="{W_NS}">{para("&e;")}</w:ftr>')
    path = write_docx(tmp_path / "footer.docx", document_xml(para("fine")), extra={"word/footer2.xml": footer})
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "XML entities")


@pytest.mark.timeout(60)
def test_damaged_docx_only_raises_document_errors(tmp_path: Path) -> None:
    """Every truncation and a few hundred random byte flips of a valid .docx end in DocumentError (or
    EmptyDocumentError) or valid text: never KeyError, BadZipFile, zlib.error or a ParseError traceback."""
    good = write_docx(tmp_path / "good.docx", document_xml(VALID_BODY)).read_bytes()
    path = tmp_path / "fuzz.docx"
    rng = random.Random(1234)
    variants = [good[:n] for n in range(0, len(good), 7)]
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        variants.append(bytes(data))
    for data in variants:
        path.write_bytes(data)
        try:
            load_text(path)
        except DocumentError as exc:
            assert str(path) in str(exc)


def test_docx_handles_are_closed(tmp_path: Path) -> None:
    """No file descriptor stays open after success or failure (docx2txt leaks its ZipFile on errors)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count open file descriptors")
    good = write_docx(tmp_path / "good.docx", document_xml(para("ok")))
    bad = write_docx(tmp_path / "bad.docx", None)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_text(good)
        with pytest.raises(DocumentError):
            load_text(bad)
    assert len(os.listdir("/proc/self/fd")) <= before


# ------------------------------------------------------------------------------------------ Markdown


def write_md(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_markdown_utf8(tmp_path: Path) -> None:
    path = write_md(tmp_path, "a.md", "# Café\n\nRésumé naïve — 日本語.\n".encode())
    assert load_text(path) == "# Café\n\nRésumé naïve — 日本語."


def test_markdown_utf8_bom_keeps_first_heading(tmp_path: Path) -> None:
    path = write_md(tmp_path, "bom.md", b"\xef\xbb\xbf# Title\n\nBody caf\xc3\xa9\n")
    text = load_text(path)
    assert text.startswith("# Title")
    assert "\ufeff" not in text
    assert "café" in text


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_markdown_utf16_with_bom(tmp_path: Path, codec: str) -> None:
    bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
    path = write_md(tmp_path, f"{codec}.md", bom + "# Titre\r\n\r\nCafé résumé\r\n".encode(codec))
    text = load_text(path)
    assert text == "# Titre\n\nCafé résumé"


def test_markdown_latin1_fails_without_encoding(tmp_path: Path) -> None:
    path = write_md(tmp_path, "latin.md", "café résumé\n".encode("latin-1"))
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert type(excinfo.value) is DocumentError
    assert_error(excinfo, path, "not UTF-8 text (byte 0xe9 at offset 3)", "--encoding latin-1")


def test_markdown_latin1_with_encoding_keeps_every_character(tmp_path: Path) -> None:
    path = write_md(tmp_path, "latin.md", "café résumé\n".encode("latin-1"))
    assert load_text(path, encoding="latin-1") == "café résumé"


def test_encoding_is_a_fallback_utf8_files_stay_utf8(tmp_path: Path) -> None:
    """`--encoding latin-1` over a mixed folder must not turn its UTF-8 files into mojibake."""
    path = write_md(tmp_path, "utf8.md", "café\n".encode())
    assert load_text(path, encoding="latin-1") == "café"


def test_encoding_that_also_fails(tmp_path: Path) -> None:
    path = write_md(tmp_path, "bad.md", b"caf\xe9 \x81\n")
    with pytest.raises(DocumentError) as excinfo:
        load_text(path, encoding="cp1252")  # 0x81 is undefined in cp1252
    assert_error(excinfo, path, "neither UTF-8 nor cp1252 text", "--encoding")


def test_utf16_without_bom_with_explicit_encoding(tmp_path: Path) -> None:
    path = write_md(tmp_path, "nobom.md", "# Hi\nthere\n".encode("utf-16-le"))
    assert load_text(path, encoding="utf-16-le") == "# Hi\nthere"
    with pytest.raises(DocumentError) as excinfo:  # without it, the NUL bytes mean binary
        load_text(path)
    assert_error(excinfo, path, "binary file")


def test_unknown_encoding_is_a_config_error(tmp_path: Path) -> None:
    path = write_md(tmp_path, "x.md", b"\xe9\n")
    with pytest.raises(ConfigError, match="no-such-codec"):
        load_text(path, encoding="no-such-codec")


def test_png_named_md(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    path = write_md(tmp_path, "image.md", png)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "binary file, not Markdown text", "PNG")


def test_nul_bytes_md(tmp_path: Path) -> None:
    path = write_md(tmp_path, "nul.md", b"# Title\n\nsome\x00text\n")
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "binary file, not Markdown text", "NUL byte at offset 13")


def test_control_characters_md(tmp_path: Path) -> None:
    path = write_md(tmp_path, "ctrl.md", b"abc\x01\x02\x03" * 50)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "binary file, not Markdown text", "control characters")


def test_tabs_and_form_feeds_are_text(tmp_path: Path) -> None:
    path = write_md(tmp_path, "ok.md", b"col1\tcol2\n\x0c\nnext page\n" * 20)
    assert "col1\tcol2" in load_text(path)


def test_zero_byte_md(tmp_path: Path) -> None:
    path = write_md(tmp_path, "zero.md", b"")
    with pytest.raises(EmptyDocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "empty document: nothing to index")


@pytest.mark.parametrize(
    "data",
    [b"   \n\t\n\r\n  \n", b"\xef\xbb\xbf\n \n", b"<!-- only a comment -->\n\n", b"\xff\xfe" + " \n".encode("utf-16-le")],
    ids=["whitespace", "bom-whitespace", "comment-only", "utf16-whitespace"],
)
def test_whitespace_only_md(tmp_path: Path, data: bytes) -> None:
    path = write_md(tmp_path, "blank.md", data)
    with pytest.raises(EmptyDocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "empty document: nothing to index")


def test_headers_only_md_is_kept(tmp_path: Path) -> None:
    path = write_md(tmp_path, "headers.md", b"# One\n\n## Two\n")
    assert load_text(path) == "# One\n\n## Two"


def test_markdown_cleanup(tmp_path: Path) -> None:
    source = (
        "# Guide\n"
        "See [the docs](https://example.com/docs) and ![a diagram](img/d.png \"Diagram\").\n"
        "Badge: [![build passing](https://ci/badge.svg)](https://ci/job)\n"
        "Mail <https://example.com/contact> or <b>bold</b> and<br>break.\n"
        "<!-- a comment\nspanning lines -->Kept after comment.\n"
        "Generic List<T> and <placeholder> stay; so does `<br>` in code.\n"
        "Odd [link](https://en.wikipedia.org/wiki/Foo_(bar)) stays readable.\n"
        "```html\n<div>[not a link](x)</div>\n```\n"
        "   \n\n\n\n"
        "Tail   \n"
    )
    path = write_md(tmp_path, "guide.md", source.encode())
    text = load_text(path)
    assert text.startswith("# Guide\n")
    assert "See the docs and a diagram." in text
    assert "Badge: build passing" in text
    assert "Mail https://example.com/contact or bold and\nbreak." in text
    assert "a comment" not in text and "Kept after comment." in text
    assert "List<T> and <placeholder>" in text and "`<br>`" in text
    assert "Foo_(bar)" in text
    assert "<div>[not a link](x)</div>" in text  # fenced code untouched
    assert "\n\n\n" not in text
    assert text.endswith("Tail")


def test_unterminated_comment_is_kept_not_dropped(tmp_path: Path) -> None:
    path = write_md(tmp_path, "c.md", b"before <!-- never closed\nafter\n")
    assert load_text(path) == "before <!-- never closed\nafter"


def test_crlf_and_cr_newlines(tmp_path: Path) -> None:
    path = write_md(tmp_path, "crlf.markdown", b"# T\r\n\r\nline one\rline two\r\n")
    assert load_text(path) == "# T\n\nline one\nline two"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "unit",
    ["[", "<", "![", "[](", "[a](", "<a ", "<b", "`", "<!--", "<https:", "](", "[x]"],
)
def test_one_megabyte_line_is_linear(tmp_path: Path, unit: str) -> None:
    """llama-index's `\\[(.*?)\\]\\((.*?)\\)` and `<.*?>` take about an hour on a 1 MB line of '['."""
    line = unit * (1024 * 1024 // len(unit))
    path = write_md(tmp_path, "long.md", (line + "\n").encode())
    start = time.perf_counter()
    text = load_text(path)
    # Quadratic cleanup takes about an hour here; linear about 0.3 s. The bound leaves room for a busy machine.
    assert time.perf_counter() - start < 15
    lines = text.split("\n")
    assert max(len(line) for line in lines) <= LoaderLimits().max_line_chars  # wrapped, not rejected
    # Nothing dropped: a wrap cut either falls between two characters or replaces one space.
    assert text.replace("\n", " " if " " in unit else "") == line.rstrip()


@pytest.mark.timeout(20)
def test_trailing_space_run_is_linear(tmp_path: Path) -> None:
    """A `[ \\t]+$` regex is quadratic on a long run of spaces followed by text."""
    path = write_md(tmp_path, "spaces.md", (" " * 1_000_000 + "x\n").encode())
    start = time.perf_counter()
    text = load_text(path)
    assert time.perf_counter() - start < 15  # quadratic: minutes; linear: well under a second
    assert text.replace("\n", "").strip() == "x"


def test_long_lines_are_wrapped_at_spaces(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(5000)]
    path = write_md(tmp_path, "wrap.md", " ".join(words).encode())
    text = load_text(path, limits=LoaderLimits(max_line_chars=100))
    lines = text.split("\n")
    assert all(len(line) <= 100 for line in lines)
    assert " ".join(lines).split() == words  # broken only at spaces: every word intact


def test_twenty_thousand_words_without_punctuation(tmp_path: Path) -> None:
    words = [f"word{i % 997}" for i in range(20_000)]
    path = write_md(tmp_path, "nopunct.md", " ".join(words).encode())
    text = load_text(path)
    assert text.split() == words


def test_markdown_too_large(tmp_path: Path) -> None:
    path = write_md(tmp_path, "big.md", b"a" * 2048)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path, limits=LoaderLimits(max_file_bytes=1024))
    assert_error(excinfo, path, "file too large (2,048 bytes; limit 1,024 bytes)")


def test_small_file_does_not_allocate_the_size_cap(tmp_path: Path) -> None:
    """read(max_file_bytes) would allocate 50 MB up front for every file."""
    path = write_md(tmp_path, "small.md", b"# small\n\nfile\n")
    result, _, peak = measure(load_text, path)
    assert result == "# small\n\nfile"
    assert peak < 1024 * 1024


def _fake_fstat(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make fstat report `size` bytes, as if the file grew after it was checked."""
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        values = list(real_fstat(fd))
        values[6] = size  # st_size
        return os.stat_result(values)

    monkeypatch.setattr(loaders.os, "fstat", fstat)


def test_file_growing_past_the_cap_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_md(tmp_path, "growing.md", b"a" * 2048)
    _fake_fstat(10, monkeypatch)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path, limits=LoaderLimits(max_file_bytes=1024))
    assert_error(excinfo, path, "file too large", "grew while being read", "limit 1,024 bytes")


def test_file_growing_under_the_cap_is_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"some words\n" * 30_000
    path = write_md(tmp_path, "growing.md", content)
    _fake_fstat(10, monkeypatch)
    assert load_text(path) == content.decode().strip()


def test_vanished_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.md"
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert type(excinfo.value) is DocumentError
    assert_error(excinfo, path, "cannot read file", "No such file or directory")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_md(tmp_path, "secret.md", b"# secret\n")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: simulate the OS refusing
        def deny(*args: object, **kwargs: object) -> int:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(loaders.os, "open", deny)
    try:
        with pytest.raises(DocumentError) as excinfo:
            load_text(path)
    finally:
        path.chmod(0o644)
    assert_error(excinfo, path, "cannot read file", "Permission denied")


@pytest.mark.timeout(10)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_named_md_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "pipe.md"
    os.mkfifo(path)
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "not a regular file")


def test_unsupported_suffix_in_load_text(tmp_path: Path) -> None:
    path = write_md(tmp_path, "notes.txt", b"hello")
    with pytest.raises(DocumentError) as excinfo:
        load_text(path)
    assert_error(excinfo, path, "unsupported file type '.txt'", ".md, .markdown, .docx")


def test_clean_markdown_is_public_and_pure() -> None:
    assert clean_markdown("[a](b) <i>c</i>") == "a c"


def test_loader_limits_validated() -> None:
    with pytest.raises(ConfigError, match="max_line_chars"):
        LoaderLimits(max_line_chars=0)


def test_module_import_is_light() -> None:
    """docx2txt and defusedxml load only when a .docx is read (the CLI must start fast)."""
    import subprocess

    code = ("import sys, ragcli.loaders; "
            "print(any(m.split('.')[0] in ('docx2txt', 'defusedxml', 'zipfile') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ discover


def make_tree(root: Path) -> None:
    files = {
        "b.md": "b",
        "a.md": "a",
        "sub/c.markdown": "c",
        "sub/deeper/D.DOCX": "",
        "sub/Upper.MD": "u",
        ".hidden.md": "h",
        ".git/inside.md": "g",
        "sub/.cache/x.md": "x",
        "notes.txt": "t",
        "image.png": "p",
        "~$lock.docx": "owner file",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_discover_folder(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = discover([tmp_path])
    assert [f.relpath for f in found] == ["a.md", "b.md", "sub/Upper.MD", "sub/c.markdown", "sub/deeper/D.DOCX"]
    for source in found:
        assert isinstance(source, SourceFile)
        assert source.root == tmp_path
        assert source.path.is_absolute()
        assert source.path == tmp_path / source.relpath
        assert "\\" not in source.relpath


def test_discover_is_deterministic(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert discover([tmp_path]) == discover([tmp_path])


def test_discover_relative_argument_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    found = discover([Path("docs")])
    assert found[0].root == tmp_path / "docs"
    assert all(f.path.is_absolute() for f in found)


def test_discover_single_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = discover([tmp_path / "sub" / "c.markdown"])
    assert found == [SourceFile(path=tmp_path / "sub" / "c.markdown", root=tmp_path / "sub", relpath="c.markdown")]


def test_discover_explicit_hidden_file_is_taken(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert [f.relpath for f in discover([tmp_path / ".hidden.md"])] == [".hidden.md"]


def test_discover_keeps_argument_order_and_dedupes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = discover([tmp_path / "b.md", tmp_path])
    assert [f.relpath for f in found] == ["b.md", "a.md", "sub/Upper.MD", "sub/c.markdown", "sub/deeper/D.DOCX"]


def test_discover_unsupported_file_argument(tmp_path: Path) -> None:
    make_tree(tmp_path)
    path = tmp_path / "notes.txt"
    with pytest.raises(DocumentError) as excinfo:
        discover([path])
    assert_error(excinfo, path, "'.txt'", *SUPPORTED_SUFFIXES)


def test_discover_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(NoDocumentsError) as excinfo:
        discover([missing])
    assert str(missing) in str(excinfo.value)
    assert "no such file or folder" in str(excinfo.value)


def test_discover_nothing_found(tmp_path: Path) -> None:
    (tmp_path / "only.txt").write_text("x")
    (tmp_path / ".hidden.md").write_text("x")
    with pytest.raises(NoDocumentsError) as excinfo:
        discover([tmp_path])
    message = str(excinfo.value)
    assert str(tmp_path) in message
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in message


@pytest.mark.timeout(10)
@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_discover_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("secret")
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "doc.md").write_text("doc")
    (root / "escape.md").symlink_to(outside / "secret.md")  # leaves the root: skipped
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)  # leaves the root: skipped
    (root / "loop").symlink_to(root, target_is_directory=True)  # back to the root: not walked again
    (root / "alias.md").symlink_to(root / "real" / "doc.md")  # inside: same file, listed once
    (root / "a_link").symlink_to(root / "real", target_is_directory=True)  # inside: same folder, walked once
    (root / "drafts").symlink_to(root / ".drafts", target_is_directory=True)  # inside, to a hidden folder
    (root / ".drafts").mkdir()
    (root / ".drafts" / "draft.md").write_text("draft")
    (root / "broken.md").symlink_to(root / "missing.md")  # dangling: skipped
    found = discover([root])
    assert [f.relpath for f in found] == ["drafts/draft.md", "real/doc.md"]
    assert found[1].path == root / "real" / "doc.md"


def test_discover_hidden_root_argument_is_walked(tmp_path: Path) -> None:
    root = tmp_path / ".notes"
    make_tree(root)
    assert [f.relpath for f in discover([root])][:2] == ["a.md", "b.md"]


def test_discover_word_owner_files_only_for_docx(tmp_path: Path) -> None:
    (tmp_path / "~$report.docx").write_bytes(b"\x06owner")
    (tmp_path / "~$odd.md").write_text("a markdown file with an odd name")
    assert [f.relpath for f in discover([tmp_path])] == ["~$odd.md"]


def test_discover_unlistable_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    blocked = tmp_path / "sub"
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(loaders.os, "scandir", scandir)
    with pytest.raises(DocumentError) as excinfo:
        discover([tmp_path])
    assert_error(excinfo, blocked, "cannot list folder", "Permission denied")
