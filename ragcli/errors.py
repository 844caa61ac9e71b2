"""One exception hierarchy for ragcli.

Every error a user can cause or fix is a `RagcliError`. Its message is one line that says what went
wrong (naming the file, model or value) and what to do next. The CLI boundary (`ragcli.cli.app.main`)
is the only place that turns these into output and exit codes; library code only raises them.
"""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_THRESHOLD = 3


class RagcliError(Exception):
    """Base class: an expected failure with a one-line, actionable message."""

    exit_code: int = EXIT_ERROR


class ConfigError(RagcliError):
    """A setting (flag, environment variable or .env entry) has a bad value."""


class UsageError(RagcliError):
    """The command was called with options that cannot work together."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(RagcliError):
    """A model is neither a local directory nor downloaded into the models folder."""


class ModelDownloadError(RagcliError):
    """download-model could not fetch a model (offline, unknown repo, gated, interrupted)."""


class ModelLoadError(RagcliError):
    """A model folder exists but cannot be loaded (incomplete, unsupported architecture)."""


class IndexNotFoundError(RagcliError):
    """There is no index where one was expected."""


class IndexCorruptedError(RagcliError):
    """An index file is missing, truncated or does not match its recorded checksum."""


class GenerationGoneError(RagcliError):
    """Internal to the local index: the generation a reader resolved from CURRENT was pruned by a writer
    before the reader pinned its files. `LocalIndex.load` reads CURRENT again and retries; it reaches a
    user only if a writer keeps publishing faster than the reader can open (then the advice is to retry),
    and it is never reported as corruption: nothing is damaged."""


class IndexModelMismatchError(RagcliError):
    """The index was built with another embedding model (or dimension)."""


class IndexWriteError(RagcliError):
    """Writing a new index generation failed (disk full, I/O error); the previous one still serves."""


class IndexLockedError(RagcliError):
    """Another process is writing to the index."""


class PermissionDeniedError(RagcliError):
    """A file or folder ragcli must read (or write) is not permitted to the user running it: an index
    file, an input document, a model folder. The message names the path, the permission missing and
    how to grant it; it is never reported as corruption or as a bug."""

    def __init__(self, path: object, action: str = "read", *, is_dir: bool = False) -> None:
        self.path = str(path)
        self.action = action
        super().__init__(f"Permission denied: ragcli cannot {action} {self.path}. {permission_advice(path, action, is_dir)}")

    @classmethod
    def from_os_error(cls, exc: OSError, action: str = "read") -> PermissionDeniedError:
        import os

        path = exc.filename if exc.filename is not None else "a file"
        is_dir = isinstance(path, (str, bytes, os.PathLike)) and os.path.isdir(path)
        return cls(path, action, is_dir=is_dir)


def permission_advice(path: object, action: str = "read", is_dir: bool = False) -> str:
    """What to do about a permission ragcli lacks on `path` (one sentence)."""
    if action == "read":
        need, mode = ("read and search (r-x)", "u+rx") if is_dir else ("read (r)", "u+r")
    elif action == "list":
        need, mode = "read and search (r-x)", "u+rx"
    else:
        need, mode = "write (w)", "u+w"
    return (f"It needs {need} permission for the user running ragcli: grant it (e.g. chmod {mode} '{path}', "
            "or chown it to that user) or run ragcli as the file's owner.")


class NoDocumentsError(RagcliError):
    """The paths given to ingest hold no supported document."""


class DocumentError(RagcliError):
    """One input document cannot be read. Ingest reports it by name and goes on with the others."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EmptyDocumentError(DocumentError):
    """A document holds no text. It is skipped with a warning, not counted as a failure."""


class QAFileError(RagcliError):
    """A bench QA file is missing or has a bad line."""


class BaselineError(RagcliError):
    """A bench baseline report cannot be used (unreadable, or from another configuration)."""


class BackendUnavailableError(RagcliError):
    """An optional backend's packages are not installed."""


class DatabricksError(RagcliError):
    """The Databricks Vector Search target failed."""


class DatabricksAuthError(DatabricksError):
    """Databricks rejected or is missing credentials."""


class ThresholdError(RagcliError):
    """bench: one or more metrics fell below a --fail-under value or regressed against a baseline."""

    exit_code = EXIT_THRESHOLD
