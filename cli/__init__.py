"""The ``llmstd`` command line: a thin Typer shell over the Python API, one module per command."""
