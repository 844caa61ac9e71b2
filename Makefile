# One entry point for people and CI. `make demo` and `make test` each set everything up from scratch
# (a virtualenv in .venv with a CPU build of torch) and then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build: an unpinned torch pulls several GB of CUDA packages.
TORCH  ?= torch==2.13.0
QUESTION ?= How long does the Lantern team keep deleted files of its Delta tables?

.PHONY: install demo test lint docs clean

$(BIN)/ragcli: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,databricks,serve,spark,mlflow,onnx,report,gguf]"
	@touch $@

install: $(BIN)/ragcli

demo: install
	$(BIN)/ragcli download-model
	$(BIN)/ragcli ingest sample_docs
	$(BIN)/ragcli query --compare "$(QUESTION)"

test: install
	$(BIN)/python -m pytest

docs: install
	$(BIN)/typer ragcli.cli.app utils docs --name ragcli --output docs/cli.md

lint: install
	$(BIN)/ruff check ragcli tests

clean:
	rm -rf $(VENV) ragcli-index *.egg-info
