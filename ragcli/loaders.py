"""Find the documents to ingest and turn each one into plain text, refusing hostile files with a clear reason.

Two entry points:

- `discover(paths)` lists the supported files under the paths given to `ingest` (folders recursively,
  deterministic order, hidden files and symlinks that leave the folder skipped);
- `load_text(path)` returns one document's text, or raises `DocumentError` (cannot be read: the reason says
  why and what to do) or `EmptyDocumentError` (nothing to index; ingest skips it with a warning).

Why so defensive (see docs/failure-modes.md §2): docx2txt decompresses whole zip parts in memory with no
size check and parses them with the stdlib XML parser (entity bombs, depending on the linked expat), and it
reports renamed, truncated, encrypted and legacy files all as `BadZipFile`. Markdown readers decode with
`errors="ignore"` (silently dropping characters), miss a heading after a BOM and strip links with
backtracking regexes that are quadratic on one long line. Here every file is read once, with a size cap,
into memory; every check runs on those bytes (no second open, so no time-of-check/time-of-use gap); every
regex is linear; and characters are never dropped silently.

Limits (`LoaderLimits`, all enforced before the expensive step they protect):

- `max_file_bytes` (50 MiB): the file on disk, for both formats;
- `max_zip_entries` (10,000): entries in a .docx, checked on the raw bytes *before* `zipfile` builds its
  table of contents, and again on that table;
- `max_docx_part_bytes` (50 MiB) and `max_docx_total_bytes` (200 MiB): each entry's declared uncompressed size
  and their sum are checked first; then the parts docx2txt will parse (`word/document.xml`, headers,
  footers) are stream-decompressed through `ZipFile.open()` with the same caps counted on the bytes actually
  produced, because declared sizes can lie;
- `max_line_chars` (200,000): longer lines are **wrapped, not rejected**: cut at the last space in the second
  half of each window, or hard-cut where there is none. Each cut scans at most half a window and advances by
  at least half a window, so wrapping is linear in the line length and no character is lost.

This module imports only the standard library at load time: `zipfile`, `docx2txt` and `defusedxml` are
imported inside the functions that need them so `ragcli --help` stays fast.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ragcli.errors import ConfigError, DocumentError, EmptyDocumentError, NoDocumentsError, permission_advice

if TYPE_CHECKING:  # pragma: no cover
    import zipfile

MARKDOWN_SUFFIXES = (".md", ".markdown")
DOCX_SUFFIXES = (".docx",)
SUPPORTED_SUFFIXES = (*MARKDOWN_SUFFIXES, *DOCX_SUFFIXES)

_MIB = 1024 * 1024
_CHUNK = 64 * 1024  # read/decompress granularity
EMPTY_REASON = "empty document: nothing to index"


@dataclass(frozen=True)
class LoaderLimits:
    """Caps that keep one hostile or oversized document from exhausting memory or time.

    The defaults are far above any real .md or .docx (a 300-page report is a few MB of XML) and far below what
    hurts a laptop. All sizes are in bytes; see the module docstring for where each one is enforced.
    """

    max_file_bytes: int = 50 * _MIB
    max_docx_part_bytes: int = 50 * _MIB
    max_docx_total_bytes: int = 200 * _MIB
    max_zip_entries: int = 10_000
    max_line_chars: int = 200_000

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_docx_part_bytes", "max_docx_total_bytes", "max_zip_entries",
                     "max_line_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"loader limit {name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = LoaderLimits()
# How a user raises the caps (settings of ragcli.config; named in the reasons that refuse a file)
FILE_CAP_SETTING = "RAGCLI_MAX_FILE_MB"
PART_CAP_SETTING = "RAGCLI_MAX_DOCX_PART_MB"


def limits_for(max_file_mb: int, max_docx_part_mb: int) -> LoaderLimits:
    """Loader limits with the file and .docx part caps of the settings (all parts together may hold four
    parts' worth, and at least the default 200 MiB)."""
    part = max_docx_part_mb * _MIB
    return LoaderLimits(max_file_bytes=max_file_mb * _MIB, max_docx_part_bytes=part,
                        max_docx_total_bytes=max(DEFAULT_LIMITS.max_docx_total_bytes, 4 * part))


def _raise_cap(setting: str, limit: int) -> str:
    return f"if the document is genuine, raise the cap: {setting}={limit // _MIB * 2} (MiB; now {limit // _MIB})"


@dataclass(frozen=True)
class SourceFile:
    """One file to ingest.

    `relpath` (relative to `root`, forward slashes on every OS) is the file's identity in the index, so it must
    not depend on where the folder was mounted or on the platform.
    """

    path: Path  # absolute path (symlinks inside the root are not resolved, so it names what the user sees)
    root: Path  # the argument it was found under: the folder, or the file's parent for a file argument
    relpath: str
    real: str | None = field(default=None, compare=False)  # os.path.realpath(path) when known without asking


# --------------------------------------------------------------------------------------------- discover


def _unsupported_reason(suffix: str) -> str:
    shown = f"'{suffix}'" if suffix else "(no suffix)"
    return f"unsupported file type {shown}: ragcli reads {', '.join(SUPPORTED_SUFFIXES)}"


def name_problem(relpath: str) -> str | None:
    """Why a discovered file cannot be indexed under its name, or None. A name whose bytes are not UTF-8
    reaches Python as lone surrogates, which no report, chunk table or hash can hold as text."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return ("file name is not valid UTF-8 (its bytes are shown escaped); rename it to UTF-8 "
                "(e.g. convmv -f latin1 -t utf8 --notest) to index it")
    return None


def printable_name(relpath: str) -> str:
    """`relpath` with the bytes of a non-UTF-8 name as backslash escapes (b'bad-\\xff.md' -> 'bad-\\\\xff.md')."""
    try:
        relpath.encode("utf-8")
        return relpath
    except UnicodeEncodeError:
        return os.fsencode(relpath).decode("utf-8", "backslashreplace")


def _is_supported(name: str) -> bool:
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def _inside(path: str, root: str) -> bool:
    """Whether the real path `path` is `root` or below it (both already resolved)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False


def _is_word_owner_file(name: str) -> bool:
    """Word writes '~$name.docx' (a few bytes, not a zip) next to a document while it is open."""
    return name.startswith("~$") and name.lower().endswith(".docx")


def _walk(root: Path) -> list[SourceFile]:
    """Supported files under `root`, recursively, without following anything out of it.

    Skipped silently: names starting with '.' (hidden files and folders such as .git), Word's '~$' owner
    files (written next to an open .docx; not a document), unsupported suffixes, anything that is not a
    regular file or folder, and symlinks whose target is missing or outside the root. A folder inside the root
    is entered once however many symlinks lead to it (so a link back to an ancestor cannot loop).
    """
    root_real = os.path.realpath(root)
    found: list[SourceFile] = []
    saw_link = False  # without a symlink below the root, a file's real path is the root's plus its name
    visited = {root_real}
    stack: list[tuple[str, str]] = [(str(root), "")]
    # Symlinked folders are walked only after every real one, so a folder reached both ways is listed under
    # its own name, whatever the sort order of the link.
    linked: list[tuple[str, str, str]] = []
    while stack or linked:
        if stack:
            folder, rel_prefix = stack.pop()
        else:
            folder, rel_prefix, real = linked.pop(0)
            if real in visited:
                continue
            visited.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError as exc:
            raise DocumentError(folder, f"cannot list folder: Permission denied. "
                                        f"{permission_advice(folder, 'list', True)}") from exc
        except OSError as exc:
            raise DocumentError(folder, f"cannot list folder: {exc.strerror or exc}") from exc
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = f"{rel_prefix}{name}"
            try:
                is_link = entry.is_symlink()
                if is_link:
                    saw_link = True
                    target = os.path.realpath(entry.path)
                    if not os.path.exists(target) or not _inside(target, root_real):
                        continue
                is_dir = entry.is_dir()  # follows a symlink, which is known to stay inside the root
                is_file = not is_dir and entry.is_file()
            except OSError:  # vanished or unreadable while listing: load_text would fail on it anyway
                continue
            if is_dir:
                real = os.path.realpath(entry.path)
                if is_link:
                    linked.append((entry.path, f"{rel}/", real))
                elif real not in visited:
                    visited.add(real)
                    stack.append((entry.path, f"{rel}/"))
            elif is_file and _is_supported(name) and not _is_word_owner_file(name):
                found.append(SourceFile(path=Path(entry.path), root=root, relpath=rel))
    if not saw_link:  # every file reached once, under its own name: no real path to compare
        return sorted((SourceFile(path=f.path, root=f.root, relpath=f.relpath,
                                  real=os.path.join(root_real, *f.relpath.split("/"))) for f in found),
                      key=lambda f: f.relpath)
    # A file reached through a symlink and under its own name is listed once, under its own name.
    unique: dict[str, SourceFile] = {}
    for source in sorted(found, key=lambda f: f.relpath):
        real = os.path.realpath(source.path)
        if real not in unique or (_is_direct(source) and not _is_direct(unique[real])):
            unique[real] = source
    return sorted(unique.values(), key=lambda f: f.relpath)


def _is_direct(source: SourceFile) -> bool:
    """Whether no symlink below the root leads to this file (its real path is the root's plus relpath)."""
    expected = os.path.join(os.path.realpath(source.root), *source.relpath.split("/"))
    return os.path.realpath(source.path) == expected


def discover(paths: list[Path]) -> list[SourceFile]:
    """The files to ingest, in a deterministic order.

    Each folder argument is searched recursively (files sorted by relpath, see `_walk` for what is skipped);
    each file argument is taken as is, even if hidden, but must have a supported suffix (case-insensitive),
    else `DocumentError` names the suffix and the supported ones. Arguments keep their order. A real file
    reachable twice (overlapping arguments, a symlink to a sibling) is listed once, at its first position,
    under its own name rather than a symlink's when both were found.

    Raises `NoDocumentsError` for a path that does not exist, or when nothing supported was found at all.
    """
    results: list[SourceFile] = []
    seen: dict[str, int] = {}  # real path -> position in results
    for raw in paths:
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(raw))))
        try:
            exists = path.exists()
            is_dir = exists and path.is_dir()
            is_file = exists and not is_dir and path.is_file()
        except OSError as exc:
            raise DocumentError(path, f"cannot read: {exc.strerror or exc}") from exc
        if not exists:
            raise NoDocumentsError(f"{raw}: no such file or folder; check the path given to ingest")
        if is_dir:
            candidates = _walk(path)
        elif is_file:
            if not _is_supported(path.name):
                raise DocumentError(path, _unsupported_reason(path.suffix))
            candidates = [SourceFile(path=path, root=path.parent, relpath=path.name)]
        else:
            raise DocumentError(path, "not a regular file or folder")
        for source in candidates:
            real = source.real or os.path.realpath(source.path)
            if real not in seen:
                seen[real] = len(results)
                results.append(source)
            elif _is_direct(source) and not _is_direct(results[seen[real]]):
                results[seen[real]] = source  # prefer the file's own name over a symlink's
    if not results:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise NoDocumentsError(
            f"no supported documents ({', '.join(SUPPORTED_SUFFIXES)}) found in {where}"
        )
    return results


# -------------------------------------------------------------------------------------------- load_text


def load_text(path: Path, *, encoding: str | None = None, limits: LoaderLimits = DEFAULT_LIMITS) -> str:
    """The text of one .md/.markdown or .docx document, ready for splitting.

    `encoding` (the CLI's `--encoding`) is the fallback for Markdown that is neither UTF-8 nor marked by a
    BOM: see `_decode_markdown`. It is ignored for .docx (XML declares its own encoding).

    Raises `DocumentError` with a one-line reason (not found, unreadable, too large, binary, not UTF-8, not a
    valid/encrypted/legacy .docx, zip or XML bomb, ...) and `EmptyDocumentError` when nothing is left to index.
    A `ConfigError` means the `encoding` name itself is unknown (a bad flag, not a bad file).
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DocumentError(path, _unsupported_reason(path.suffix))
    return load_bytes(path, _read_file(path, limits.max_file_bytes), encoding=encoding, limits=limits)


def load_bytes(path: Path | str, data: bytes, *, encoding: str | None = None,
               limits: LoaderLimits = DEFAULT_LIMITS) -> str:
    """`load_text` for a document already read into memory (a Spark job's binary files): `path` gives the
    format (its suffix) and the name in messages; the same checks, limits and errors apply."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(path, _unsupported_reason(path.suffix))
    if len(data) > limits.max_file_bytes:
        raise DocumentError(path, _too_big_reason(len(data), limits.max_file_bytes))
    if not data:
        raise EmptyDocumentError(path, EMPTY_REASON)
    if suffix in DOCX_SUFFIXES:
        text = _docx_text(path, data, limits)
    else:
        text = _markdown_text(path, data, encoding)
    text = _normalise_whitespace(text)
    if not text.strip():
        raise EmptyDocumentError(path, EMPTY_REASON)
    return _wrap_long_lines(text, limits.max_line_chars)


def _read_file(path: Path, max_bytes: int) -> bytes:
    """All bytes of a regular file, or `DocumentError` with the OS reason.

    Opened non-blocking and checked with fstat *on the open descriptor*, so a FIFO or device named `x.md` is
    refused instead of hanging, and the size cap is enforced on what is actually read (a file that grows after
    the check still stops at the cap).
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise DocumentError(path, f"cannot read file: it no longer exists ({exc.strerror})") from exc
    except PermissionError as exc:
        raise DocumentError(path, f"cannot read file: Permission denied. {permission_advice(path)}") from exc
    except OSError as exc:
        raise DocumentError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DocumentError(path, "not a regular file")
            if info.st_size > max_bytes:
                raise DocumentError(path, _too_big_reason(info.st_size, max_bytes))
            # Ask for the size fstat reported (+1 to notice growth), not for the cap: read(n) allocates n bytes
            # up front, and a 50 MB buffer per small file would dominate memory.
            chunks = [fh.read(info.st_size + 1)]
            total = len(chunks[0])
            while total > info.st_size and total <= max_bytes:  # the file grew while being read
                chunk = fh.read(min(_CHUNK, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except OSError as exc:
        raise DocumentError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if total > max_bytes:
        raise DocumentError(path, _too_big_reason(None, max_bytes))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_big_reason(size: int | None, limit: int) -> str:
    shown = f"{size:,} bytes" if size is not None else "it grew while being read"
    return f"file too large ({shown}; limit {limit:,} bytes); split it, or {_raise_cap(FILE_CAP_SETTING, limit)}"


# ----------------------------------------------------------------------------------------------- .docx

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAIN_PART = "word/document.xml"
# The exact patterns docx2txt 0.9 applies with re.match (unescaped '.', no end anchor): every part it will
# parse must pass the size and XML checks first, so match the same names, not the ones we would have chosen.
_DOCX2TXT_EXTRA_PARTS = (re.compile("word/header[0-9]*.xml"), re.compile("word/footer[0-9]*.xml"))
_ENTITY_REASON = "refused: the document declares XML entities (possible entity-expansion attack)"
# Word never writes a DTD; forbidding it stops billion-laughs at the DOCTYPE, before any entity is declared.
_DTD_REASON = "refused: the document declares a DTD or XML entities (possible entity-expansion attack)"
_OTHER_OFFICE_PARTS = {
    "xl/workbook.xml": "an Excel workbook",
    "ppt/presentation.xml": "a PowerPoint presentation",
    "content.xml": "an OpenDocument file",
}


class _DiscardTarget:
    """XML parser target that builds nothing: the checks need well-formedness and defusing, not a tree."""


def _zip_errors() -> tuple[type[BaseException], ...]:
    """Exceptions zipfile and its decompressors raise on damaged data."""
    import struct
    import zipfile
    import zlib

    errors: list[type[BaseException]] = [zipfile.BadZipFile, zlib.error, EOFError, struct.error, OSError,
                                         ValueError]
    try:
        import lzma

        errors.append(lzma.LZMAError)
    except ImportError:  # pragma: no cover - Python built without lzma
        pass
    return tuple(errors)


def _docx_text(path: Path, data: bytes, limits: LoaderLimits) -> str:
    """Validate a .docx held in memory, then extract its text with docx2txt.

    Checks, in order: zip magic (else legacy/encrypted OLE file or not a zip); entry count on the raw bytes and
    on the table of contents; declared sizes; main part present; each part docx2txt parses stream-decompressed
    with byte caps and parsed by defusedxml (no DTD, entities or external references). Only then does
    docx2txt run, on the same bytes (an `io.BytesIO`, not the path: no second open, nothing to leak or lock
    if it raises).
    """
    import io
    import zipfile

    if not data.startswith(_ZIP_MAGIC):
        if data.startswith(_OLE_MAGIC):
            raise DocumentError(
                path, "encrypted or legacy Word (.doc) file: not supported; save it as .docx without a password"
            )
        raise DocumentError(path, "not a valid .docx (not a zip archive)")
    # zipfile builds one ZipInfo per central-directory record when it opens the archive. Every record starts
    # with this signature, so the count is an upper bound taken before any object is allocated.
    if data.count(b"PK\x01\x02") > limits.max_zip_entries:
        raise DocumentError(path, f"too many zip entries (limit {limits.max_zip_entries:,}); possible zip bomb")
    errors = _zip_errors()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_entries:
                raise DocumentError(
                    path, f"too many zip entries ({len(infos):,}; limit {limits.max_zip_entries:,}); possible zip bomb"
                )
            _check_declared_sizes(path, infos, limits)
            names = {info.filename for info in infos}
            if _MAIN_PART not in names:
                raise DocumentError(path, _missing_main_part_reason(names))
            parts = [
                info
                for info in infos
                if info.filename == _MAIN_PART or any(p.match(info.filename) for p in _DOCX2TXT_EXTRA_PARTS)
            ]
            total = 0
            for info in parts:
                total += _check_part(path, zf, info, limits, limits.max_docx_total_bytes - total)
    except DocumentError:
        raise
    except NotImplementedError as exc:  # zipfile: unsupported compression method (a RuntimeError: keep first)
        raise DocumentError(path, f"not a valid .docx (damaged zip: {exc})") from exc
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required for extraction"
        raise DocumentError(
            path, "encrypted zip entries: not supported; save it as .docx without a password"
        ) from exc
    except errors as exc:
        raise DocumentError(path, f"not a valid .docx (damaged zip: {exc})") from exc

    from xml.etree.ElementTree import ParseError

    import docx2txt

    try:
        text: str = docx2txt.process(io.BytesIO(data))
    except (KeyError, ParseError, RuntimeError, NotImplementedError, *errors) as exc:  # pragma: no cover
        # Everything docx2txt reads was checked above; this is a safety net, not an expected path.
        raise DocumentError(path, f"could not extract text: {exc}") from exc
    return text


def _check_declared_sizes(path: Path, infos: list[zipfile.ZipInfo], limits: LoaderLimits) -> None:
    """Refuse before decompressing anything if any entry, or all of them together, declare too many bytes."""
    total = 0
    for info in infos:
        if info.file_size > limits.max_docx_part_bytes:
            raise DocumentError(
                path,
                f"too large when decompressed ({info.filename} declares {info.file_size:,} bytes; "
                f"limit {limits.max_docx_part_bytes:,} bytes per part); possible zip bomb; "
                f"{_raise_cap(PART_CAP_SETTING, limits.max_docx_part_bytes)}",
            )
        total += info.file_size
    if total > limits.max_docx_total_bytes:
        raise DocumentError(
            path,
            f"too large when decompressed (parts declare {total:,} bytes in all; "
            f"limit {limits.max_docx_total_bytes:,} bytes); possible zip bomb",
        )


def _missing_main_part_reason(names: set[str]) -> str:
    reason = f"missing main document part {_MAIN_PART}"
    backslashed = sorted(n for n in names if "\\" in n)
    if any(n.replace("\\", "/") == _MAIN_PART for n in backslashed):
        return (f"{reason} (the archive names it 'word\\document.xml' with backslashes, which is not valid in a "
                "zip; open and re-save it in Word)")
    for part, kind in _OTHER_OFFICE_PARTS.items():
        if part in names:
            return f"{reason} (this looks like {kind} renamed to .docx)"
    return reason


def _check_part(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: LoaderLimits,
                total_left: int) -> int:
    """Stream-decompress one part with hard byte caps while defusedxml parses it; return its size.

    The caps count bytes actually produced, not the declared `file_size` (CPython's zipfile stops at the
    declared size and then fails the CRC check, but the cap does not rely on that). Nothing is kept: the parser
    target builds no tree, so memory stays at one chunk plus the parser's state.
    """
    from xml.etree.ElementTree import ParseError

    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
    from defusedxml.ElementTree import DefusedXMLParser

    part_cap = limits.max_docx_part_bytes
    parser: Any = DefusedXMLParser(
        target=_DiscardTarget(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    size = 0
    try:
        stream: IO[bytes]
        with zf.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > part_cap:
                    raise DocumentError(
                        path,
                        f"too large when decompressed ({info.filename} exceeds the limit of {part_cap:,} bytes "
                        f"per part; it declared {info.file_size:,}); possible zip bomb; "
                        f"{_raise_cap(PART_CAP_SETTING, part_cap)}",
                    )
                if size > total_left:
                    raise DocumentError(
                        path,
                        f"too large when decompressed (parts exceed the limit of "
                        f"{limits.max_docx_total_bytes:,} bytes in all); possible zip bomb",
                    )
                parser.feed(chunk)
        parser.close()
    except EntitiesForbidden as exc:
        raise DocumentError(path, _ENTITY_REASON) from exc
    except (DTDForbidden, ExternalReferenceForbidden) as exc:
        raise DocumentError(path, _DTD_REASON) from exc
    except ParseError as exc:
        raise DocumentError(path, f"not a valid .docx ({info.filename} is not well-formed XML: {exc})") from exc
    return size


# -------------------------------------------------------------------------------------------- Markdown

_BINARY_MAGICS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF file"),
    (_ZIP_MAGIC, "a zip archive (a .docx?)"),
    (_OLE_MAGIC, "a legacy Office file"),
    (b"\x7fELF", "an executable"),
    (b"\x1f\x8b", "a gzip archive"),
)
# BOMs, longest first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
# C0 control characters other than \t \n \r \f (\r is normalised away before counting), and DEL.
# C1 controls (U+0080-U+009F) are not counted: cp1252 quotes decoded with --encoding latin-1 land there.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BINARY_CONTROL_RATIO = 0.01


def _binary_reason(detail: str) -> str:
    return f"binary file, not Markdown text ({detail})"


def _markdown_text(path: Path, data: bytes, encoding: str | None) -> str:
    """Decode (see `_decode_markdown`), refuse binary content, and make links and HTML readable."""
    for magic, kind in _BINARY_MAGICS:
        if data.startswith(magic):
            raise DocumentError(path, _binary_reason(f"looks like {kind}"))
    text = _decode_markdown(path, data, encoding)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    nul = text.find("\x00")
    if nul >= 0:
        raise DocumentError(path, _binary_reason(f"NUL character at offset {nul}"))
    controls = len(_CONTROL_RE.findall(text))
    if controls > _BINARY_CONTROL_RATIO * len(text):
        raise DocumentError(path, _binary_reason(f"{controls:,} control characters in {len(text):,}"))
    return clean_markdown(text)


def _is_ascii_compatible(codec: codecs.CodecInfo) -> bool:
    try:
        return codec.encode("#a\n")[0] == b"#a\n"
    except (UnicodeError, ValueError):
        return False


def _decode_markdown(path: Path, data: bytes, encoding: str | None) -> str:
    """Strict, BOM-aware decoding; never drops or replaces a character.

    1. A BOM (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) wins, even over `encoding`: it is unambiguous, and a
       mixed folder ingested with `--encoding latin-1` must still read its UTF-16 files. The BOM is removed, so
       a first line `# Title` stays a heading.
    2. `encoding` that is not ASCII-compatible (e.g. utf-16-le without a BOM): decode with it.
    3. Otherwise strict UTF-8 (a NUL byte first means binary). If that fails and `encoding` is given, decode
       with `encoding` strictly: `--encoding` is the fallback for legacy files, so UTF-8 files in the same run
       are not turned into mojibake (a latin-1 file is almost never valid UTF-8, so the fallback is reliable).
    """
    codec = None
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding)
        except LookupError as exc:
            raise ConfigError(f"unknown encoding {encoding!r}; use a Python codec name such as latin-1 or cp1252"
                              ) from exc
    for bom, bom_codec, label in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(bom_codec)
            except UnicodeDecodeError as exc:
                raise DocumentError(path, _decode_reason(f"not valid {label} text despite its byte-order mark",
                                                         data, exc, len(bom))) from exc
    if codec is not None and not _is_ascii_compatible(codec):
        try:
            return _strip_bom(data.decode(codec.name))
        except UnicodeDecodeError as exc:
            raise DocumentError(path, _decode_reason(f"not {encoding} text", data, exc, 0)) from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DocumentError(path, _binary_reason(f"NUL byte at offset {nul}"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if codec is None:
            raise DocumentError(path, _decode_reason("not UTF-8 text", data, exc, 0)
                                + "; convert it or pass --encoding latin-1") from exc
        utf8_error = exc
    try:
        return _strip_bom(data.decode(codec.name))
    except UnicodeDecodeError as exc:
        reason = _decode_reason(f"neither UTF-8 nor {encoding} text", data, utf8_error, 0)
        raise DocumentError(path, f"{reason}; pass the file's real encoding with --encoding") from exc


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _decode_reason(what: str, data: bytes, exc: UnicodeDecodeError, base: int) -> str:
    offset = base + exc.start
    shown = f"byte 0x{data[offset]:02x}" if offset < len(data) else "truncated character"
    return f"{what} ({shown} at offset {offset})"


# Markdown cleanup. Every pattern has bounded repetition over characters that cannot start another match of
# the same kind, so the regex engine does O(1) amortised work per character: a 1 MB line of '[' or '<' is
# linear, unlike llama-index's `\[(.*?)\]\((.*?)\)` and `<.*?>`, which are quadratic.
_INLINE_RE = re.compile(
    r"(?P<code>`[^`\n]{1,1000}`)"  # inline code: kept verbatim (e.g. `<br>` in prose about HTML)
    r"|(?P<link>!?\[(?P<text>[^\[\]\n]{0,500})\]\([^()\s]{0,2000}(?:[ \t]{1,50}\"[^\"\n]{0,500}\")?\))"
    r"|(?P<auto><(?P<url>(?:https?|ftp|mailto):[^<>\s]{1,2000})>)"  # autolink: keep the address
    r"|(?P<tag></?(?P<name>[A-Za-z][A-Za-z0-9]{0,20})(?:\s[^<>]{0,2000})?/?>)"
)
_FENCE_OPEN_RE = re.compile(r" {0,3}(`{3,}|~{3,})")
# Tags removed by the cleanup; other <words> (List<T>, <placeholder>) are kept. Block-level ones become a
# line break or a space so words on either side do not run together.
_INLINE_TAGS = frozenset(
    "a abbr b big cite code del dfn em font i img ins kbd mark q s samp small span strike strong sub sup "
    "time tt u var wbr".split()
)
_BREAK_TAGS = frozenset("br hr".split())
_BLOCK_TAGS = frozenset(
    "address article aside blockquote caption center col colgroup dd details div dl dt figcaption figure "
    "footer h1 h2 h3 h4 h5 h6 header li main nav ol p picture pre section source summary table tbody td tfoot "
    "th thead tr ul video audio iframe".split()
)


def _inline_sub(match: re.Match[str]) -> str:
    if match.group("code") is not None:
        return match.group(0)
    if match.group("link") is not None:
        return match.group("text")
    if match.group("auto") is not None:
        return match.group("url")
    name = match.group("name").lower()
    if name in _INLINE_TAGS:
        return ""
    if name in _BREAK_TAGS:
        return "\n"
    if name in _BLOCK_TAGS:
        return " "
    return match.group(0)


def _remove_html_comments(text: str) -> str:
    """Drop `<!-- ... -->` with a forward scan (linear; a lazy `.*?` regex is quadratic without a `-->`).

    An unterminated comment is kept as text: dropping the rest of the file would lose content silently.
    """
    start = text.find("<!--")
    if start < 0:
        return text
    out: list[str] = []
    pos = 0
    while start >= 0:
        end = text.find("-->", start + 4)
        if end < 0:
            break
        out.append(text[pos:start])
        pos = end + 3
        start = text.find("<!--", pos)
    out.append(text[pos:])
    return "".join(out)


def _clean_prose(text: str) -> str:
    text = _remove_html_comments(text)
    # Twice, so one level of nesting such as a badge [![alt](img)](href) also reduces to its text.
    for _ in range(2):
        text = _INLINE_RE.sub(_inline_sub, text)
    return text


def clean_markdown(text: str) -> str:
    """Markdown made readable for embedding, in linear time; headings and structure are kept as they are.

    `[text](url)` → `text`, `![alt](url)` → `alt`, `<https://x>` → `https://x`, known HTML tags removed, HTML
    comments dropped. Fenced code blocks and inline code spans are left untouched (their brackets and tags are
    content). Links whose URL contains spaces or parentheses are left as written rather than guessed at.
    """
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    for line in lines:
        if fence is None:
            opened = _FENCE_OPEN_RE.match(line)
            if opened is None:
                prose.append(line)
                continue
            if prose:
                out.append(_clean_prose("\n".join(prose)))
                prose = []
            fence = opened.group(1)
            out.append(line)
        else:
            out.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and stripped == fence[0] * len(stripped):
                fence = None
    if prose:
        out.append(_clean_prose("\n".join(prose)))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- shared

_BLANK_RUN_RE = re.compile(r"\n{3,}")


def _normalise_whitespace(text: str) -> str:
    """Unix newlines, no trailing whitespace on any line, at most one blank line in a row, no blank ends.

    Done with `split`/`rstrip` rather than a `[ \\t]+$` regex, which backtracks quadratically on a long run of
    spaces that is followed by text.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN_RE.sub("\n\n", text).strip("\n")


def _wrap_long_lines(text: str, max_chars: int) -> str:
    """Split every line longer than `max_chars` into lines of at most `max_chars`, losing no character
    other than the single space at which a line is broken. Linear: see the module docstring."""
    if len(text) <= max_chars:
        return text
    lines = text.split("\n")
    if all(len(line) <= max_chars for line in lines):
        return text
    out: list[str] = []
    half = max_chars // 2
    for line in lines:
        start = 0
        while len(line) - start > max_chars:
            end = start + max_chars
            cut = line.rfind(" ", start + half, end + 1)
            if cut > start:
                out.append(line[start:cut])
                start = cut + 1
            else:
                out.append(line[start:end])
                start = end
        out.append(line[start:])
    return "\n".join(out)
