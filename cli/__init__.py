"""The ``llmstd`` command line: a thin argparse shell over the Python API, one module per command."""


def run() -> None:
    """Console-script entry point. ``llmstd --version`` answers before the command modules (and
    numpy) are imported; everything else goes to the argparse application."""
    import sys

    if sys.argv[1:] == ["--version"]:
        from llmstd import __version__

        print(f"llmstd {__version__}")
        return
    from llmstd.cli.main import run as run_app

    run_app()
