"""While every reader opens every catalogue file, an audit hook records what happens: no exec,
no subprocess, no os.system and no import outside an allowlist may occur.

Runs in a child process because audit hooks cannot be removed once installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .catalogue import CASES, canary_path

CHILD = textwrap.dedent(
    """
    import json, sys
    import llmstd
    from llmstd import formats
    formats.names()  # import every format module up front: reading must need nothing more
    # Container libraries are imported lazily by the readers; import them before the hook so that
    # their own start-up (which may run generated code or ask the platform its name) is not counted.
    for module in ("h5py", "onnx"):
        try:
            __import__(module)
        except ImportError:
            pass
    from llmstd.converters import crc32c
    crc32c.value(b"warm-up")

    ALLOWED_PREFIXES = ("llmstd", "numpy", "ml_dtypes", "h5py", "onnx", "google.protobuf", "encodings")
    # Code objects may run only when they come from module files being imported (stdlib, the
    # virtual environment, llmstd itself); anything else, e.g. "<string>", is code from the input.
    TRUSTED_ROOTS = tuple({sys.prefix, sys.base_prefix, sys.argv[2]})
    BANNED = ("subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
              "os.forkpty", "ctypes.dlopen", "pty.spawn", "code.__new__")
    events = []

    def hook(event, args):
        if event == "import":
            module = args[0]
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and not module.startswith(ALLOWED_PREFIXES):
                events.append(f"import {module}")
        elif event == "exec":
            filename = getattr(args[0], "co_filename", "")
            if not filename.startswith(TRUSTED_ROOTS):
                events.append(f"exec {filename}")
        elif event.startswith(BANNED):
            events.append(f"{event} {str(args)[:80]}")

    paths = json.loads(sys.argv[1])
    load, LlmstdError = llmstd.load, llmstd.LlmstdError  # the API's modules load on first use: before the hook
    sys.addaudithook(hook)
    for path in paths:
        try:
            load(path)
        except LlmstdError:
            pass
    print(json.dumps(events))
    """
)


def test_readers_never_execute_code(tmp_path: Path) -> None:
    paths = []
    for case in CASES:
        root = tmp_path / case.name
        root.mkdir()
        paths.append(str(case.build(root)))
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(paths), repo], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout.strip().splitlines()[-1])
    assert events == [], f"reading hostile files triggered: {events}"
    assert not any(canary_path(tmp_path / c.name).exists() for c in CASES)
