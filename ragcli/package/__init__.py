"""`ragcli package`: turn a tested configuration (models, splitter, retrieval settings, index) into
something a serving platform runs.

- `mlflow_model`: `package_mlflow()`, an MLflow pyfunc model in the models-from-code style, its
  checks, logging and registration (`ragcli package mlflow`);
- `runtime`: what the saved model runs when it is loaded: ragcli's own `answer`, once per input row;
- `pyfunc_model`: the model's code file, executed by MLflow (never imported by ragcli itself).

MLflow is an optional extra (`pip install 'ragcli[mlflow]'`) and is imported only inside this
package, inside functions, so `ragcli --help` stays fast.
"""

from __future__ import annotations

from ragcli.errors import BackendUnavailableError

INSTALL_HINT = "Run: pip install 'ragcli[mlflow]'"


def require_mlflow() -> None:
    """Raise BackendUnavailableError unless MLflow (and pandas, which pyfunc inputs arrive as) import."""
    missing = []
    for name in ("mlflow", "pandas"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise BackendUnavailableError(f"ragcli package mlflow needs {' and '.join(missing)}, which are not "
                                      f"installed. {INSTALL_HINT}")
