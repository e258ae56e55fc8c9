"""Findings: problems with a checkpoint collected rather than raised, and the one switch every reader
uses between its two modes.

A reader is strict by default: the first problem raises its typed error (``llmstd convert`` and
``llmstd load`` want exactly that). Handed a :class:`Findings` collector it is lenient: each problem
is recorded under a finding code and the reader carries on with what it could read, so that
``llmstd validate`` lists everything that needs fixing in one run -- found by the very checks
conversion runs, never by a copy of them that could drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llmstd.errors import LlmstdError

ERROR, WARNING = "error", "warning"
T = TypeVar("T")


@dataclass
class Finding:
    severity: str  # error | warning
    code: str
    message: str
    tensor: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        where = ": ".join(w for w in (self.file, f"tensor '{self.tensor}'" if self.tensor else None) if w)
        return f"{self.severity} [{self.code}] {where + ': ' if where else ''}{self.message}"


class Findings(list[Finding]):
    """The collector a lenient reader (and validate's own lint) records into, in order found."""

    def error(self, code: str, message: str, *, tensor: str | None = None, file: Path | str | None = None) -> None:
        self.append(Finding(ERROR, code, message, tensor, str(file) if file is not None else None))

    def warning(self, code: str, message: str, *, tensor: str | None = None, file: Path | str | None = None) -> None:
        self.append(Finding(WARNING, code, message, tensor, str(file) if file is not None else None))

    def from_exception(self, code: str, exc: LlmstdError) -> None:
        message = exc.message + (f" — {exc.hint}" if exc.hint else "")
        self.error(code, message, tensor=exc.tensor, file=exc.file)

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self)


def refuse(findings: Findings | None, code: str, error: LlmstdError) -> None:
    """One problem: strict (no collector), raise ``error``; lenient, record it under ``code``."""
    refuse_each(findings, error, [(code, error)])


def refuse_each(findings: Findings | None, error: LlmstdError, each: Iterable[tuple[str, LlmstdError]]) -> None:
    """Several problems found by one check: strict, raise ``error``, which names them all; lenient,
    record each ``(code, error)`` so that every finding names its one tensor or file."""
    if findings is None:
        raise error
    for code, one in each:
        findings.from_exception(code, one)


def attempt(findings: Findings | None, code: str, step: Callable[[], T]) -> T | None:
    """Run one reading step. Strict, its error propagates; lenient, the error is recorded under
    ``code`` and None returned, so that the reader carries on without that piece."""
    if findings is None:
        return step()
    try:
        return step()
    except LlmstdError as exc:
        findings.from_exception(code, exc)
        return None
