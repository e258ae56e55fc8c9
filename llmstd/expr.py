"""A tiny, safe expression language for naming maps: ``= hidden_size // num_heads``.

Maps declare defaults and transform parameters in terms of config fields. Expressions are parsed
with :mod:`ast` and evaluated over a whitelist of node types — never with ``eval`` — so a map file
cannot run code.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExpressionError(ValueError):
    pass


def is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith("=")


def names_in(text: str) -> set[str]:
    """Config fields an expression refers to (for validating maps on load)."""
    tree = _parse(text)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in ("None", "True", "False")}


def _parse(text: str) -> ast.Expression:
    body = text[1:] if text.startswith("=") else text
    try:
        tree = ast.parse(body.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Not, ast.BoolOp, ast.And, ast.Or,
                   ast.Compare, ast.Name, ast.Load, ast.Constant, ast.List, *_BINOPS, *_CMPOPS)
        if not isinstance(node, allowed):
            raise ExpressionError(f"expression {text!r} uses {type(node).__name__}, which maps may not use")
    return tree


def evaluate(text: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate ``text`` (with or without its leading '=') against ``scope``."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Name):
            if node.id in ("None", "True", "False"):
                return {"None": None, "True": True, "False": False}[node.id]
            if node.id not in scope:
                raise ExpressionError(f"expression {text!r} refers to unknown name '{node.id}'")
            return scope[node.id]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else not ev(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        raise ExpressionError(f"unsupported expression node {type(node).__name__}")

    return ev(_parse(text))
