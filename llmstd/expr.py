"""A tiny, safe expression language for naming maps: ``= hidden_size // num_heads``.

Maps declare defaults and transform parameters in terms of config fields. Expressions are parsed
with :mod:`ast` and evaluated over a whitelist of node types — never with ``eval`` — so a map file
cannot run code. Besides arithmetic, comparisons and ``and``/``or``/``not`` they may use
``a if c else b``, ``in`` and ``not in`` a list, a table ``{'name': value}``, a list built over
``range(n)`` with an optional condition (``[i for i in range(num_layers) if i not in
key('mlp_only_layers', [])]``), ``**`` and the functions ``int``, ``float``, ``min``, ``max``,
``get`` (``get(table, 'name', default)``) and ``key``: ``key('rotary_pct', 0.25)`` is the value of a
*framework* config key (or of the first present of a list of keys), or the default when absent --
for defaults that transformers derives from keys with no canonical field of their
own (GPT-NeoX's ``rotary_pct``, Gemma 3's ``sliding_window_pattern``).
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
# Values come from configs, which are hostile input: no expression may build a huge list or number.
_MAX_RANGE = 100_000
_MAX_EXPONENT = 64


def _range(*bounds: int) -> range:
    out = range(*bounds)
    if len(out) > _MAX_RANGE:
        raise ExpressionError(f"range of {len(out)} items exceeds the {_MAX_RANGE} an expression may build")
    return out


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > _MAX_EXPONENT:
        raise ExpressionError(f"exponent {exponent} exceeds the {_MAX_EXPONENT} an expression may use")
    return base ** exponent


_BINOPS[ast.Pow] = _power
#: Functions an expression may call. ``key`` is bound per evaluation to the framework config read.
def _get(mapping: Any, name: Any, default: Any = None) -> Any:
    """``mapping[name]`` for a mapping that holds it, else ``default`` (configs nest rope settings)."""
    return mapping.get(name, default) if isinstance(mapping, Mapping) else default


_FUNCTIONS = {"range": _range, "int": int, "float": float, "min": min, "max": max, "get": _get}
KEY_FUNCTION = "key"
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


def _member(item: Any, container: Any) -> bool:
    if not isinstance(container, (list, tuple)):
        raise ExpressionError(f"'in' needs a list, got {container!r}")
    return item in container


_CMPOPS[ast.In] = _member
_CMPOPS[ast.NotIn] = lambda item, container: not _member(item, container)


def is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith("=")


def names_in(text: str) -> set[str]:
    """Config fields an expression refers to (for validating maps on load): every name but the
    constants, the callable functions and the variables its comprehensions bind."""
    tree = _parse(text)
    bound = {g.target.id for n in ast.walk(tree) if isinstance(n, ast.ListComp) for g in n.generators
             if isinstance(g.target, ast.Name)}
    skip = {"None", "True", "False", KEY_FUNCTION, *_FUNCTIONS, *bound}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in skip}


def keys_read(text: str) -> set[str]:
    """Framework config keys an expression reads with ``key(...)`` (literal names only)."""
    found: set[str] = set()
    for node in ast.walk(_parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == KEY_FUNCTION:
            names = node.args[0] if node.args else None
            for item in (names.elts if isinstance(names, ast.List) else [names]):
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    found.add(item.value)
    return found


def _parse(text: str) -> ast.Expression:
    body = text[1:] if text.startswith("=") else text
    try:
        tree = ast.parse(body.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Not, ast.BoolOp, ast.And, ast.Or,
                   ast.Compare, ast.Name, ast.Load, ast.Store, ast.Constant, ast.List, ast.Dict, ast.IfExp,
                   ast.ListComp, ast.comprehension, ast.Call, *_BINOPS, *_CMPOPS)
        if not isinstance(node, allowed):
            raise ExpressionError(f"expression {text!r} uses {type(node).__name__}, which maps may not use")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.keywords
                                           or node.func.id not in (*_FUNCTIONS, KEY_FUNCTION)):
            raise ExpressionError(f"expression {text!r} calls something other than "
                                  f"{', '.join((*_FUNCTIONS, KEY_FUNCTION))}")
        if isinstance(node, ast.Dict) and not all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                                  for k in node.keys):
            raise ExpressionError(f"expression {text!r}: a table's keys are quoted names")
        if isinstance(node, ast.comprehension) and (len(node.ifs) > 1 or node.is_async
                                                    or not isinstance(node.target, ast.Name)):
            raise ExpressionError(f"expression {text!r}: a comprehension binds one name, with at most one condition")
    return tree


def evaluate(text: str, scope: Mapping[str, Any], framework: Mapping[str, Any] | None = None) -> Any:
    """Evaluate ``text`` (with or without its leading '=') against ``scope``; ``key(...)`` reads
    ``framework`` (the framework config), an error when none is given."""
    local: dict[str, Any] = {}

    def key(names: str | list[str], default: Any = None) -> Any:
        if framework is None:
            raise ExpressionError(f"expression {text!r} reads a framework key, but none is available here")
        for name in [names] if isinstance(names, str) else names:
            if framework.get(name) is not None:
                return framework[name]
        return default

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            function = key if node.func.id == KEY_FUNCTION else _FUNCTIONS[node.func.id]
            return function(*(ev(a) for a in node.args))
        if isinstance(node, ast.ListComp):
            (generator,) = node.generators
            assert isinstance(generator.target, ast.Name)
            out = []
            for item in ev(generator.iter):
                local[generator.target.id] = item
                if all(ev(condition) for condition in generator.ifs):
                    out.append(ev(node.elt))
            local.pop(generator.target.id, None)
            return out
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {k.value: ev(v) for k, v in zip(node.keys, node.values)}  # type: ignore[union-attr]
        if isinstance(node, ast.Name):
            if node.id in ("None", "True", "False"):
                return {"None": None, "True": True, "False": False}[node.id]
            if node.id in local:
                return local[node.id]
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
