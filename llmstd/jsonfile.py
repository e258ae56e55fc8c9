"""Strict JSON reading for small control files (config.json, shard indexes, manifests).

Duplicate keys are an error (a JSON parser silently keeping the last one is how an index can name
two shards for one tensor), and the file size is bounded before anything is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmstd.errors import FormatError

MAX_JSON_BYTES = 64 * 1024 * 1024


def _no_duplicates(path: Path):  # type: ignore[no-untyped-def]
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"duplicate JSON key '{key}'", file=path, hint="each key may appear once")
            out[key] = value
        return out

    return hook


def loads(text: str | bytes, *, source: Path) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=source) from None
    except UnicodeDecodeError:
        raise FormatError("JSON is not valid UTF-8", file=source) from None
    except RecursionError:
        raise FormatError("JSON is nested too deeply", file=source) from None


def read_json_object(path: Path, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FormatError(f"JSON file is {size} bytes, over the {max_bytes}-byte limit", file=path)
        data = loads(path.read_bytes(), source=path)
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", file=path) from None
    if not isinstance(data, dict):
        raise FormatError(f"top level must be a JSON object, got {type(data).__name__}", file=path)
    return data


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
