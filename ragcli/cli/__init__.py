"""The command-line interface. Only this package imports typer and rich; it never imports heavy libraries
at module level (see tests/test_imports.py)."""
