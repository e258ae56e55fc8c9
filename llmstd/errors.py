"""Typed errors for every failure llmstd reports.

Each error says *what* went wrong, *where* (file, tensor, byte offset when known) and *what to do*.
The CLI maps each class to one red line and an exit code (``llmstd.cli.errors``); Python callers can
catch :class:`LlmstdError` for everything llmstd raises on purpose.
"""

from __future__ import annotations

from pathlib import Path


class LlmstdError(Exception):
    """Base class: a failure llmstd detected and can explain."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        tensor: str | None = None,
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.tensor = tensor
        self.offset = offset
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.tensor:
            where.append(f"tensor '{self.tensor}'")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        text = f"{': '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f" — {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "file": self.file,
            "tensor": self.tensor,
            "offset": self.offset,
            "hint": self.hint,
        }


class MapError(LlmstdError):
    """A naming map file is invalid (unknown key, canonical name or transform, bad pattern)."""


class SpecVersionError(LlmstdError):
    """A canonical checkpoint was written by a newer major version of the spec."""


class ConfigError(LlmstdError):
    """A model configuration is missing fields, has wrong types, or contradicts the tensors."""


class FormatError(LlmstdError):
    """A file is malformed: bad header, offsets outside the file, truncated data, bad checksum."""


class UnsafeInputError(LlmstdError):
    """An input tries to execute code or to reach outside its directory; it is refused."""


class MappingError(LlmstdError):
    """Source tensors do not match the naming map: unmapped, missing, or contradicting shapes."""

    def __init__(self, message: str, *, names: list[str] | None = None, **kwargs: object) -> None:
        self.names = list(names or [])
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class CastError(LlmstdError):
    """A dtype cast would overflow finite values to inf/NaN or flush non-zero values to zero."""


class DetectionError(LlmstdError):
    """The container, dialect or architecture of a path could not be determined."""


class OutputError(LlmstdError):
    """The destination cannot be written safely (exists, overlaps the input, disk full)."""


class MissingDependencyError(LlmstdError):
    """An optional framework needed for this operation is not installed."""


def name_list(names: list[str] | tuple[str, ...], limit: int = 20) -> str:
    """Comma-separated names for a message, cut after ``limit`` so hostile inputs cannot flood it."""
    shown = ", ".join(names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def require(module: str, extra: str) -> object:
    """Import an optional framework lazily, or explain which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this operation needs '{module}', which is not installed ({exc})",
            hint=f"install it with: pip install 'llmstd[{extra}]'",
        ) from None
