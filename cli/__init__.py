"""The ``llmstd`` command line: a thin Typer shell over the Python API, one module per command."""


def run() -> None:
    """Console-script entry point. ``llmstd --version`` answers before the command modules (and
    numpy, typer, rich) are imported; everything else goes to the Typer application."""
    import sys

    if sys.argv[1:] == ["--version"]:
        from llmstd import __version__

        print(f"llmstd {__version__}")
        return
    from llmstd.cli.main import run as run_app

    run_app()
