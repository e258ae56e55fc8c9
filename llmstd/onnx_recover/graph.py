"""An index over an ONNX graph for weight recovery: who consumes each value, through which operator
input, in which module scope, and with how many transposes on the way."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from llmstd.converters.onnx_io import iter_nodes
from llmstd.onnx_recover import roles


@dataclass(frozen=True)
class Use:
    """One operator input that reads an initializer (possibly through pass-through operators)."""

    tensor: str  # the initializer
    node: Any  # onnx.NodeProto consuming it
    index: int  # input position on that node
    transposed: bool  # an odd number of 2-D transposes lie between the initializer and the node
    scope: str | None  # dotted module path of the node ('' = the root module); None if not recorded

    @property
    def where(self) -> str:
        return f"{self.node.op_type} '{self.node.name or (self.node.output[0] if self.node.output else '')}'"


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            if attr.type == 2:  # INT
                return attr.i
            if attr.type == 7:  # INTS
                return list(attr.ints)
            if attr.type == 1:  # FLOAT
                return attr.f
    return default


def attribute(node: Any, name: str, default: Any = None) -> Any:
    return _attr(node, name, default)


def node_scope(node: Any) -> str | None:
    """The module path an exporter recorded for ``node``, or None.

    torch.onnx dynamo: metadata ``pkg.torch.onnx.name_scopes`` = ['', 'model', 'model.layers.0', ...,
    '<node>']; the module is the entry before the node's own name. TorchScript / Optimum: the node
    name ``/model/layers.0/self_attn/q_proj/MatMul``; the module is everything but the last part.
    """
    for prop in node.metadata_props:
        if prop.key == roles.SCOPES_METADATA_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None
            if isinstance(scopes, list) and len(scopes) >= 2 and scopes[0] == "" and all(
                    isinstance(s, str) for s in scopes):
                return str(scopes[-2])
            return None
    name = node.name or ""
    if name.startswith("/") and name.count("/") >= 1:
        return ".".join(name.split("/")[1:-1])
    return None


class GraphIndex:
    """Consumers of every value in the model's graph and its subgraphs."""

    def __init__(self, model: Any) -> None:
        self.nodes = list(iter_nodes(model.graph))
        self.consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        self.producer: dict[str, Any] = {}
        for node in self.nodes:
            for k, value in enumerate(node.input):
                if value:
                    self.consumers[value].append((node, k))
            for value in node.output:
                self.producer[value] = node
        # An If hands on the outputs of the branch it takes: a value a branch outputs is, unchanged,
        # the If's output at that position (onnxruntime-genai's LongRoPE graphs choose their rotary
        # tables so). Loop and Scan bodies compute; they are not followed.
        self.branch_outputs: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes:
            if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.type == 5:  # GRAPH: then_branch, else_branch
                        for out, value in zip(node.output, attr.g.output):
                            self.branch_outputs[value.name].append(out)
        self._scopes = {id(n): node_scope(n) for n in self.nodes}
        self.has_scopes = any(s is not None for s in self._scopes.values())

    def scope(self, node: Any) -> str | None:
        return self._scopes[id(node)]

    def uses(self, tensor: str) -> list[Use]:
        """Operator inputs reading ``tensor``, following pass-through operators."""
        out: list[Use] = []
        stack: list[tuple[str, bool, int]] = [(tensor, False, 0)]
        while stack:
            value, transposed, depth = stack.pop()
            if depth < 8:
                stack.extend((out, transposed, depth + 1) for out in self.branch_outputs.get(value, []))
            for node, k in self.consumers.get(value, []):
                if node.op_type in roles.PASS_THROUGH and node.domain in ("", "ai.onnx") and depth < 8:
                    if not node.output:
                        continue  # a malformed node: nothing reads what it passes on
                    if node.op_type == "Transpose":
                        perm = _attr(node, "perm")
                        if perm not in (None, [1, 0]):
                            continue  # a 3-D+ permutation is computation, not a folded layout
                        stack.append((node.output[0], not transposed, depth + 1))
                    else:
                        stack.append((node.output[0], transposed, depth + 1))
                    continue
                out.append(Use(tensor, node, k, transposed, self.scope(node)))
        return out

    def value_consumers(self, value: str) -> list[tuple[Any, int]]:
        return list(self.consumers.get(value, []))
