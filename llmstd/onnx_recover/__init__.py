"""Recover canonical tensors from ONNX models exported by other tools.

Exporters keep a parameter's name only sometimes. ``torch.onnx.export(dynamo=True)`` keeps the names
of tensors it uses as they are (norm weights, biases, embeddings) but folds ``x @ W.T`` into a new,
transposed constant named ``val_116``; the TorchScript exporter does the same with
``onnx::MatMul_123``; a tied embedding is kept twice (the table, and a transposed copy for the LM
head); all-zero biases and constant tensors may be merged or dropped. Recovery therefore combines
two kinds of evidence, each producing *claims* "this tensor is Hugging Face parameter P":

1. **Name.** An initializer whose name (after an optional wrapper prefix such as ``m.`` that every
   name shares) is a name of the architecture's ``hf`` naming-map dialect is that parameter, as stored.
2. **Graph.** Each initializer is followed to the operator inputs that read it (through Identity,
   Cast and 2-D Transpose). The operator input gives the role and layout (:mod:`.roles`: MatMul's B
   is a linear weight ``[in, out]``, Gather's data an embedding table, ...); the operator's module
   scope (exporter metadata or node name) gives the module; the ``hf`` dialect of the naming map
   names the one parameter of that role in that module. The tensor is brought to the canonical
   layout the role implies (undoing folded transposes) and from there to the Hugging Face layout by
   the map's own inverse transforms.

Several claims on one parameter must agree byte for byte (the duplicate is reported); the recovered
Hugging Face tensors then go through the same strict :func:`llmstd.mapping.to_canonical` as a
Hugging Face directory, which also verifies that a tied LM-head copy equals the embedding.

A bias the config requires but no tensor provides is recovered as zeros only when the graph proves
it zero: its module's linear or norm operator is present and adds no bias (exporters delete
``Add(x, 0)``). The report's ``transforms`` states each such recovery. Any other parameter without a
claim is an error naming it and saying why, e.g. a position table folded into a constant slice for
one static sequence length. Nothing is guessed: roles and modules come from the graph, names and
layouts from the naming map.

The Hugging Face ``config.json`` must sit beside the ``.onnx`` file (as in Optimum exports): the
graph alone does not record norm epsilons, rotary parameters and the like.

**onnxruntime-genai's model builder** (``python -m onnxruntime_genai.models.builder``, recognised by
the graph's producer name) writes no ``config.json``: the user copies the one of the Hugging Face
directory the builder read next to ``model.onnx``, and the reader checks it against the graph (head
counts of the attention operators, norm epsilons). The builder scopes most modules after a template
of its own (``model.layers.0.attn.qkv_proj``), which :data:`roles.GENAI_SCOPES` states in canonical
tensors; its initializer names follow that template and are no evidence. So in a builder graph a
linear, norm or embedding operand read in a template module is that canonical tensor (a packed
q|k|v projection is split along its rows by the config's head sizes), and the map's inverse
transforms give the Hugging Face tensors from the canonical ones (Phi-3's fused ``qkv_proj`` and
``gate_up_proj`` are joined again); norms inside a layer keep the source model's module names and
are read as in a torch export. Refused, by name: quantized weights (``MatMulNBits`` and the like
approximate the parameters), interleaved rotary (q and k rows not in the canonical order), and any
norm weight of an architecture whose norms apply ``offset + w`` (Gemma): the builder stores the
factor ``1 + w``, and ``(1 + w) - 1`` is not ``w`` in floating point. Every initializer of a
builder graph is a parameter or a rotary cos/sin table; anything else is an error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import dtypes, transforms, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.configmap import read_config
from llmstd.converters.onnx_io import OnnxFile
from llmstd.dtypes import DType
from llmstd.errors import FormatError, MappingError
from llmstd.formats import common
from llmstd.formats.onnx import GENAI_CONFIG
from llmstd.jsonfile import read_json_object
from llmstd.mapping import DialectMatcher, MappingReport, from_canonical, to_canonical
from llmstd.maps import DialectName, Entry, Head, NamingMap
from llmstd.onnx_recover import roles
from llmstd.onnx_recover.graph import GraphIndex, Use, attribute
from llmstd.tensors import ArrayTensor, DerivedTensor, LazyTensor, same_bytes
from llmstd.transpose import transpose2d

DIALECT = "hf"  # recovered parameters are named in this dialect of the naming map, then mapped
CONFIG = "config.json"


# --------------------------------------------------------------------------------------------
# lazy layout helpers


class _Transposed(LazyTensor):
    def __init__(self, source: LazyTensor) -> None:
        if len(source.shape) != 2:
            raise ValueError("only matrices are transposed")
        self.source = source
        self.shape = (source.shape[1], source.shape[0])
        self.dtype = source.dtype

    def load(self) -> np.ndarray:
        return transpose2d(self.source.load())


def _transpose(t: LazyTensor) -> LazyTensor:
    return t.source if isinstance(t, _Transposed) else _Transposed(t)


class _Reshaped(LazyTensor):
    def __init__(self, source: LazyTensor, shape: tuple[int, ...]) -> None:
        self.source, self.shape, self.dtype = source, shape, source.dtype

    def load(self) -> np.ndarray:
        return self.source.load().reshape(self.shape)


class _Rows(LazyTensor):
    """Rows ``start:start + count`` of a tensor: one projection of a packed q|k|v matrix or bias."""

    def __init__(self, source: LazyTensor, start: int, count: int) -> None:
        self.source, self.start = source, start
        self.shape, self.dtype = (count, *source.shape[1:]), source.dtype

    def load(self) -> np.ndarray:
        return np.ascontiguousarray(self.source.load()[self.start:self.start + self.shape[0]])


class _ShapeOnly(LazyTensor):
    """A placeholder with a shape, for computing names and shapes through a map without data."""

    def __init__(self, shape: tuple[int, ...], dtype: DType) -> None:
        self.shape, self.dtype = shape, dtype

    def load(self) -> np.ndarray:  # pragma: no cover - never loaded
        raise AssertionError("shape-only placeholder loaded")


# --------------------------------------------------------------------------------------------
# the hf dialect seen as (module, role) -> parameter


@dataclass(frozen=True)
class _Param:
    entry: Entry
    dname: DialectName
    pattern: str  # the dialect pattern (primary name or an alias) with {prefix} filled in
    module: re.Pattern[str]  # the module part of ``pattern`` as a regex ({i} -> the layer group)
    role: str

    def instantiate(self, layer: int | None) -> str:
        name = self.dname.name
        return name.replace("{i}", str(layer)) if layer is not None else name


class _HfIndex:
    """Parameters of one head of the hf dialect, looked up by module path and role."""

    def __init__(self, nmap: NamingMap, head: Head) -> None:
        self.nmap, self.head = nmap, head
        self.matcher = DialectMatcher(nmap, DIALECT, head.prefix)
        self.params: list[_Param] = []
        for entry, dname in nmap.entries_for(DIALECT):
            role = vocab.BY_PATTERN[entry.canonical[0]].role
            primary = DialectName(dname.name.replace("{prefix}", head.prefix), dname.steps,
                                  tuple(a.replace("{prefix}", head.prefix) for a in dname.aliases))
            for pattern in (primary.name, *primary.aliases):
                module = pattern.rsplit(".", 1)[0] if "." in pattern else ""
                regex = re.compile(re.escape(module).replace(r"\{i\}", r"(?P<i>0|[1-9]\d*)") + r"\Z")
                self.params.append(_Param(entry, primary, pattern, regex, role))

    def lookup(self, module: str, role: str) -> list[tuple[_Param, int | None]]:
        found = []
        for param in self.params:
            if param.role != role:
                continue
            m = param.module.match(module)
            if m:
                found.append((param, int(m.group("i")) if "i" in param.module.groupindex else None))
        # An alias and its primary name describe one parameter.
        unique: dict[tuple[int, int | None], tuple[_Param, int | None]] = {}
        for param, layer in found:
            unique.setdefault((id(param.entry), layer), (param, layer))
        return list(unique.values())

    def knows_module(self, module: str) -> bool:
        return any(p.module.match(module) for p in self.params)

    def name_match(self, name: str) -> tuple[str, Entry, DialectName, int | None] | str | None:
        """(primary hf name, entry, dialect name, layer) for a parameter name, an ignore reason, or None."""
        m = self.matcher.match(name)
        if m is not None:
            primary = m.dname.name.replace("{prefix}", self.head.prefix)
            if m.layer is not None:
                primary = primary.replace("{i}", str(m.layer))
            return primary, m.entry, m.dname, m.layer
        return self.matcher.ignore_reason(name)


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    return name[len(prefix):] if name.startswith(prefix) else None


#: roles.GENAI_SCOPES as regexes: {i} -> group 'i' (a layer), {n} -> group 'n' (the layer count).
_GENAI_SCOPES = [(re.compile(re.escape(t).replace(r"\{i\}", r"(?P<i>0|[1-9]\d*)")
                             .replace(r"\{n\}", r"(?P<n>0|[1-9]\d*)") + r"\Z"), pairs)
                 for t, pairs in roles.GENAI_SCOPES.items()]


def is_genai(f: OnnxFile) -> bool:
    """Whether onnxruntime-genai's model builder wrote the graph."""
    return str(f.model.producer_name) == roles.GENAI_PRODUCER


def _wrapper_prefix(index: _HfIndex, names: list[str], scopes: list[str]) -> tuple[str, int]:
    """The prefix every recognisable name and scope shares beyond the model's own (a wrapper module
    such as ``m.``), and how many names/scopes it explains. Chosen by evidence, most common first."""
    votes: Counter[str] = Counter()
    for name in names:
        for k in [0] + [i + 1 for i, ch in enumerate(name) if ch == "."]:
            if index.name_match(name[k:]) is not None:
                votes[name[:k]] += 1
                break
    for scope in scopes:
        for k in [0] + [i + 1 for i, ch in enumerate(scope) if ch == "."]:
            if index.knows_module(scope[k:]):
                votes[scope[:k]] += 1
                break
    if not votes:
        return "", 0
    prefix, count = votes.most_common(1)[0]
    return prefix, count


# --------------------------------------------------------------------------------------------
# claims


@dataclass
class _Claim:
    tensor: LazyTensor  # in the hf dialect's layout
    source: str  # initializer it came from
    key: tuple[str, str]  # (initializer, layout path) — equal keys are trivially equal tensors
    evidence: str


class _Recovery:
    def __init__(self, f: OnnxFile, nmap: NamingMap, head: Head, config_scope: Mapping[str, Any] | None) -> None:
        self.f = f
        self.nmap = nmap
        self.head = head
        self.index = _HfIndex(nmap, head)
        self.graph = GraphIndex(f.model)
        self.claims: dict[str, list[_Claim]] = {}
        # Builder graphs: claims on canonical names (tensors in the canonical layout), turned into
        # hf claims by the map's inverse transforms once all are known (fused hf tensors need all).
        self.genai = is_genai(f)
        self.canonical_claims: dict[str, list[_Claim]] = {}
        self.expected: dict[str, tuple[int, ...]] = {}  # canonical shapes, known in the second pass
        self.report = MappingReport()
        self.hf_shapes: dict[str, tuple[int, ...]] = {}
        self.prefix = ""
        # None in the first pass, which only finds *which* parameters the graph holds (the config
        # needs that for its optional tensors, and layout transforms need the config).
        self.config_scope = config_scope

    # -- evidence ---------------------------------------------------------------------------

    def collect(self) -> None:
        params = [n for n in self.f.tensors]
        scopes = sorted({s for n in self.graph.nodes if (s := self.graph.scope(n))})
        # The builder's scopes are absolute; its initializer names are its own, not hf names, and
        # hold what the operator applies (Gemma's norm factor 1 + w under the name of w): no evidence.
        self.prefix = "" if self.genai else _wrapper_prefix(self.index, params, scopes)[0]
        for name, tensor in self.f.tensors.items():
            if not self.genai:
                self._by_name(name, tensor)
            for use in self.graph.uses(name):
                self._by_use(use, tensor)

    def _add(self, hf_name: str, claim: _Claim) -> None:
        self.claims.setdefault(hf_name, []).append(claim)

    def _by_name(self, name: str, tensor: LazyTensor) -> None:
        stripped = _strip(name, self.prefix)
        if stripped is None:
            return
        found = self.index.name_match(stripped)
        if isinstance(found, str):
            self.report.ignored.append((name, found))
        elif found is not None:
            hf_name = found[0]
            expected = self.hf_shapes.get(hf_name)
            if self.config_scope is not None and expected is not None and tensor.shape != expected:
                raise MappingError(f"is named like parameter '{hf_name}' but has shape {list(tensor.shape)}, "
                                   f"not {list(expected)}", tensor=name, file=self.f.path,
                                   hint="the exporter reused the name for a transformed tensor, or config.json "
                                        "does not describe this model")
            self._add(hf_name, _Claim(tensor, name, (name, ""), f"initializer named '{name}'"))

    def _by_use(self, use: Use, tensor: LazyTensor) -> bool:
        spec = roles.OPERAND_ROLES.get((use.node.op_type, use.index))
        if spec is None or use.scope is None:
            return False
        if use.node.op_type == "Gemm" and (attribute(use.node, "alpha", 1.0) != 1.0
                                           or attribute(use.node, "beta", 1.0) != 1.0):
            return False  # Gemm scales its operands: the stored tensor is not the parameter itself
        module = _strip(use.scope, self.prefix)
        if module is None:
            return False
        if self.genai:
            for regex, pairs in _GENAI_SCOPES:
                if m := regex.match(module):
                    return self._by_genai_use(use, spec, tensor, pairs, m.groupdict())
        candidates = self.index.lookup(module, spec.role)
        if len(candidates) != 1:
            return False
        param, layer = candidates[0]
        hf_name = param.instantiate(layer)
        if tensor.numel <= 1:
            return False  # a scalar (an epsilon, a scale) is never a model parameter
        if self.config_scope is None:
            self._add(hf_name, _Claim(tensor, use.tensor, (use.tensor, "?"), "probe"))
            return True
        if spec.role == "norm":
            self._refuse_norm_offset(use, hf_name)
        if use.transposed and len(tensor.shape) != 2:
            return False  # a Transpose without perm reverses every axis: a matrix flip only in 2-D
        operand, path = (_transpose(tensor), "T") if use.transposed else (tensor, "")
        canonical_layout, path = self._canonical_layout(use, spec, operand, path)
        if canonical_layout is None:
            return False
        steps = transforms.resolve(param.dname.steps, self.config_scope)
        if len(param.entry.canonical) == 1:
            hf_tensor, path = self._inverse(steps, canonical_layout, path)
        else:
            # A fused parameter (GPT-2's c_attn holds q|k|v): its canonical pieces cannot be read off
            # the operand's semantics alone, so the operand is taken as stored, or transposed,
            # whichever has the parameter's shape; a square fused matrix would be ambiguous.
            expected = self.hf_shapes.get(hf_name)
            options = [(canonical_layout, path)]
            if spec.role == "linear":
                options = [(operand, "T" if use.transposed else ""), (_transpose(operand), "" if use.transposed else "T")]
            fits = [(t, p) for t, p in options if expected is None or t.shape == expected]
            if len(fits) != 1 or (expected is None and len(options) > 1):
                return False
            hf_tensor, path = fits[0]
        if hf_name in self.hf_shapes and hf_tensor.shape != self.hf_shapes[hf_name]:
            return False  # the operand does not have this parameter's shape: some other constant
        evidence = f"{use.where} in module '{use.scope}' reads it as {spec.role}"
        if path.count("T") % 2:
            evidence += " (folded transpose undone)"
        self._add(hf_name, _Claim(hf_tensor, use.tensor, (use.tensor, path), evidence))
        return True

    def _by_genai_use(self, use: Use, spec: roles.OperandRole, tensor: LazyTensor,
                      pairs: tuple[vocab.Pair, ...], groups: dict[str, str | None]) -> bool:
        """A builder-template module reads ``tensor`` in role ``spec``: claim the canonical tensor(s)."""
        patterns = [p for pair in pairs for p in pair
                    if p in vocab.BY_PATTERN and vocab.BY_PATTERN[p].role == spec.role]
        if len(patterns) != len(pairs) or tensor.numel <= 1:
            return False  # e.g. an Add in a module whose canonical tensors have no bias
        layer = groups.get("i")
        if groups.get("n") is not None and self.config_scope is not None \
                and int(groups["n"]) != self.config_scope["num_layers"]:
            return False  # the final norm sits at layer index num_layers; anything else is not it
        names = [p.replace("{i}", layer) if layer is not None else p for p in patterns]
        if self.config_scope is None:
            for name in names:
                self._add_canonical(name, _Claim(tensor, use.tensor, (use.tensor, "?"), "probe"))
            return True
        if use.transposed and len(tensor.shape) != 2:
            return False
        operand, path = (_transpose(tensor), "T") if use.transposed else (tensor, "")
        canonical, path = self._canonical_layout(use, spec, operand, path)
        if canonical is None:
            return False
        if spec.role == "norm":
            self._refuse_norm_offset(use, ", ".join(names))
        shapes = [self.expected.get(n) for n in names]
        if any(s is None or s[1:] != canonical.shape[1:] for s in shapes) \
                or sum(s[0] for s in shapes if s) != canonical.shape[0]:
            raise MappingError(
                f"is read by {use.where} in module '{use.scope}' of the onnxruntime-genai builder as "
                f"{' | '.join(names)}, but its {spec.role} shape {list(canonical.shape)} is not "
                f"{' + '.join(str(list(s)) if s else '(not in this model)' for s in shapes)} as config.json says",
                tensor=use.tensor, file=self.f.path,
                hint="copy the config.json of the Hugging Face model the builder read next to the .onnx file")
        evidence = f"{use.where} in module '{use.scope}' of the onnxruntime-genai builder reads it as {spec.role}"
        if path.count("T") % 2:
            evidence += " (folded transpose undone)"
        start = 0
        for name, shape in zip(names, shapes):
            assert shape is not None
            piece = canonical if len(names) == 1 else _Rows(canonical, start, shape[0])
            rows = f", rows {start}:{start + shape[0]} of the packed projection" if len(names) > 1 else ""
            self._add_canonical(name, _Claim(piece, use.tensor, (use.tensor, f"{path}[{start}]"), evidence + rows))
            start += shape[0]
        return True

    def _add_canonical(self, name: str, claim: _Claim) -> None:
        self.canonical_claims.setdefault(name, []).append(claim)

    def _refuse_norm_offset(self, use: Use, parameter: str) -> None:
        """A norm operator applies the tensor it reads. Where the architecture's norms apply
        ``offset + w`` (Gemma: 1 + w), that tensor is the sum, and ``sum - offset`` is not ``w`` in
        floating point (the low bits of w are gone): refuse rather than recover a different model."""
        offset = self.config_scope.get("norm_weight_offset") if self.config_scope else None
        if offset:
            raise MappingError(
                f"is the factor {offset:g} + w that {use.where} applies (this architecture's norms add {offset:g} "
                f"to their weight w), not the parameter '{parameter}' itself: w cannot be recovered exactly, since "
                f"({offset:g} + w) - {offset:g} differs from w in floating point", tensor=use.tensor, file=self.f.path,
                hint="convert the original checkpoint instead (the exporter stored the sum, not the parameter)")

    def _canonical_layout(self, use: Use, spec: roles.OperandRole, operand: LazyTensor,
                          path: str) -> tuple[LazyTensor | None, str]:
        """The tensor in its role's canonical layout: [out, in] for linear, rows for embeddings,
        1-D for vectors."""
        shape = operand.shape
        if spec.layout == "rows":
            if len(shape) != 2 or attribute(use.node, "axis", 0) != 0:
                return None, path
            return operand, path
        if spec.layout == "in_out":
            return (_transpose(operand), path + "T") if len(shape) == 2 else (None, path)
        if spec.layout == "gemm_b":
            if len(shape) != 2:
                return None, path
            return (operand, path) if attribute(use.node, "transB", 0) else (_transpose(operand), path + "T")
        if spec.layout == "vector":
            if not shape or any(d != 1 for d in shape[:-1]):
                return None, path
            return (operand, path) if len(shape) == 1 else (_Reshaped(operand, (shape[-1],)), path + "R")
        return None, path

    def _inverse(self, steps: list[transforms.ResolvedStep], canonical: LazyTensor,
                 path: str) -> tuple[LazyTensor, str]:
        """The hf-layout tensor whose forward transforms give ``canonical``."""
        if not steps:
            return canonical, path
        if len(steps) == 1 and steps[0].kind.name == "transpose":
            return _transpose(canonical), path + "T"
        (shape,) = transforms.inverse_shapes(steps, [canonical.shape])
        return DerivedTensor([canonical], lambda xs: transforms.apply_inverse(steps, xs)[0], shape, canonical.dtype,
                             "recovered from ONNX"), path + "I"

    # -- resolution ---------------------------------------------------------------------------

    def resolve_claims(self) -> dict[str, LazyTensor]:
        """One tensor per hf parameter; further claims verified equal and reported as duplicates."""
        out = self._resolve(self.claims)
        for hf_name, claims in self.claims.items():
            self.report.transforms.extend(
                {"source": c.source, "recovered": hf_name, "evidence": c.evidence} for c in claims[:1]
                if c.evidence != f"initializer named '{c.source}'")
        return out

    def claim_from_canonical(self, config: Any) -> None:
        """Builder graphs: the canonical claims as hf claims, through the map's inverse transforms
        (several canonical tensors may make one hf tensor, e.g. Phi-3's fused qkv_proj)."""
        if not self.canonical_claims:
            return
        canonical = self._resolve(self.canonical_claims)
        canonical_of = _canonical_by_hf_name(self.nmap, self.head, config)
        try:
            hf_tensors = from_canonical(self.nmap, DIALECT, self.head.prefix, canonical, config)
        except MappingError as e:  # e.g. a fused hf tensor one of whose canonical parts the graph lacks
            raise MappingError(e.message, names=e.names, file=self.f.path,
                               hint="the graph lacks part of a parameter; convert the original checkpoint") from e
        for hf_name, tensor in hf_tensors.items():
            parts = [self.canonical_claims[c][0] for c in canonical_of.get(hf_name, []) if c in self.canonical_claims]
            sources = ", ".join(dict.fromkeys(c.source for c in parts))
            evidence = "; ".join(dict.fromkeys(c.evidence for c in parts))
            self._add(hf_name, _Claim(tensor, sources, (sources, "canonical"), evidence))

    def _resolve(self, table: dict[str, list[_Claim]]) -> dict[str, LazyTensor]:
        out: dict[str, LazyTensor] = {}
        for hf_name, claims in table.items():
            first = claims[0]
            seen = {first.key}
            for other in claims[1:]:
                if other.key in seen:
                    continue
                seen.add(other.key)
                if not same_bytes(first.tensor, other.tensor):
                    raise MappingError(
                        f"the graph gives two different values for '{hf_name}': {first.evidence} and "
                        f"{other.evidence}", tensor=other.source, file=self.f.path,
                        hint="the export is inconsistent; re-export the model")
                if other.source != first.source:
                    self.report.duplicates_dropped.append((other.source, first.source))
            out[hf_name] = first.tensor
        return out

    def zero_bias_proof(self, hf_name: str, canonical: list[str]) -> str | None:
        """Why the graph proves parameter ``hf_name`` (a bias) zero, or None when it does not."""
        if not self.genai:
            return self._zero_bias_proof(hf_name.rsplit(".", 1)[0] if "." in hf_name else "")
        # Builder graphs: the template modules holding these canonical biases (the builder leaves out
        # the Add of an all-zero bias); one proof per canonical bias.
        proofs = []
        for name in canonical:
            pattern, layer = vocab.pattern_of(name), vocab.layer_of(name)
            modules = [t.replace("{i}", str(layer)) for t, pairs in roles.GENAI_SCOPES.items()
                       if any(pattern == bias for _, bias in pairs)]
            proof = next((p for m in modules if (p := self._zero_bias_proof(m)) is not None), None)
            if proof is None:
                return None
            proofs.append(proof)
        return "; ".join(dict.fromkeys(proofs)) or None

    def _zero_bias_proof(self, module: str) -> str | None:
        proofs = []
        for node in self.graph.nodes:
            scope = self.graph.scope(node)
            if scope is None or _strip(scope, self.prefix) != module:
                continue
            op = node.op_type
            inputs = list(node.input) + [""] * 4
            if op in roles.NORM_BIAS_INPUT:
                if inputs[roles.NORM_BIAS_INPUT[op]]:
                    return None
                proofs.append(f"{op} '{node.name}' has no bias input")
            elif not node.output:
                continue
            elif op in roles.LINEAR_BIAS_INPUT or (op == "MatMul" and self._reads_parameter(node, 1)):
                if op in roles.LINEAR_BIAS_INPUT and inputs[roles.LINEAR_BIAS_INPUT[op]]:
                    return None
                # Whatever reads the linear output must not read a float vector or matrix constant
                # besides: that could be the bias, added (or fused into, as onnxruntime's
                # SkipLayerNormalization does) there. Shape constants (int64) and scalars cannot.
                if any(self._float_constant(v) for c, _ in self.graph.value_consumers(node.output[0])
                       for k, v in enumerate(c.input)
                       if v != node.output[0] and (c.op_type, k) not in roles.CONSTANT_OPERANDS):
                    return None
                proofs.append(f"{op} '{node.name}' adds no bias to its output")
        if not proofs:
            return None
        return "; ".join(proofs)

    def _is_constant(self, value: str) -> bool:
        if value in self.f.tensors:
            return True
        producer = self.graph.producer.get(value)
        # A constant reached through pass-through operators (a Cast of a bias) is still a constant.
        return producer is not None and producer.op_type in roles.PASS_THROUGH and all(
            self._is_constant(v) for v in producer.input if v)

    def _float_constant(self, value: str) -> bool:
        if not self._is_constant(value):
            return False
        tensor = self.f.tensors.get(value)
        return tensor is None or (tensor.dtype.is_float and tensor.numel > 1)

    def _reads_parameter(self, node: Any, k: int) -> bool:
        value = node.input[k] if k < len(node.input) else ""
        return self._is_constant(value)

    def explain_missing(self, hf_name: str, canonical: list[str], hidden: int) -> str:
        module = hf_name.rsplit(".", 1)[0]
        if self.genai:
            templates = [t for t, pairs in roles.GENAI_SCOPES.items()
                         if any(vocab.pattern_of(c) in pair for c in canonical for pair in pairs)]
            where = " or ".join(f"'{t}'" for t in templates) or f"'{module}'"
            return f"no operator in module {where} of the onnxruntime-genai builder reads an initializer in this role"
        reasons = [f"no initializer is named '{self.prefix}{hf_name}'"]
        if not self.graph.has_scopes:
            reasons.append("the graph records no module scopes (no exporter metadata, no scoped node names), so "
                           "anonymous initializers cannot be attributed to modules")
        else:
            reasons.append(f"no operator in module '{self.prefix}{module}' reads an initializer in this role")
        claimed = {c.source for cl in self.claims.values() for c in cl}
        folded = [f"'{n}' {list(t.shape)}" for n, t in self.f.tensors.items()
                  if n not in claimed and len(t.shape) >= 2 and t.shape[-1] == hidden and t.dtype.is_float
                  and any(u.node.op_type == "Add" for u in self.graph.uses(n))]
        if folded and any(vocab.BY_PATTERN.get(vocab.pattern_of(c) or "", None) and
                          vocab.BY_PATTERN[vocab.pattern_of(c)].role == "embedding" for c in canonical):
            reasons.append(f"the graph adds the constant {', '.join(folded)} instead: the exporter looked the "
                           "table up for one static sequence length and folded the result into a constant, so "
                           "the table itself is not in the file")
        return "; ".join(reasons)


# --------------------------------------------------------------------------------------------
# entry point


def _head(nmap: NamingMap, raw: Mapping[str, Any], f: OnnxFile) -> Head:
    from llmstd.formats.hf import head_by_class

    heads = nmap.dialect(DIALECT).heads
    recorded = head_by_class(nmap, DIALECT, raw)
    if recorded is not None:
        return recorded
    # No class recorded: the head whose names and scopes explain the most of the graph.
    graph = GraphIndex(f.model)
    scopes = sorted({s for n in graph.nodes if (s := graph.scope(n))})
    scored = [(_wrapper_prefix(_HfIndex(nmap, h), list(f.tensors), scopes)[1], k, h) for k, h in enumerate(heads.values())]
    return max(scored, key=lambda s: (s[0], -s[1]))[2]


def recover(path: Path, f: OnnxFile, *, arch: str | None = None) -> Checkpoint:
    """Canonical tensors and config of an ONNX model exported by another tool (see module docs)."""
    from llmstd.formats import hf

    config_path = f.path.parent / CONFIG
    genai = is_genai(f)
    _refuse_graph(f, GraphIndex(f.model), genai)
    if not config_path.is_file() and genai:
        raise FormatError(
            "this ONNX model was written by onnxruntime-genai's model builder, which does not copy the Hugging Face "
            "config.json, and none is beside it", file=f.path,
            hint="copy config.json from the Hugging Face directory the builder read (its -i/--input) next to the "
                 ".onnx file: neither the graph nor genai_config.json records rotary parameters and the like")
    if not config_path.is_file():
        raise FormatError(
            "this ONNX model was not written by llmstd and has no config.json beside it", file=f.path,
            hint="put the model's Hugging Face config.json next to the .onnx file (Optimum exports include it); "
                 "the graph alone does not record norm epsilons, rotary parameters and the like")
    raw = read_json_object(config_path)
    nmap = hf.map_for_config(raw, arch, config_path, list(f.tensors))
    head = _head(nmap, raw, f)
    # A first pass finds which parameters the graph holds; the config (which needs to know which
    # optional tensors exist) then gives the expected shapes, and the second pass recovers the values.
    probe = _Recovery(f, nmap, head, None)
    probe.collect()
    present = probe.index.matcher.canonical_names_present(list(probe.claims))
    present |= {p for n in probe.canonical_claims for p in (n, vocab.pattern_of(n)) if p}
    found = {n: c[0].tensor for n, c in [*probe.claims.items(), *probe.canonical_claims.items()]}
    dtype = common.dominant_dtype(found) if found else "float32"
    config, keys = read_config(nmap, raw, head=head.name, dtype=dtype, present=present, source=str(config_path))
    if genai:
        _check_genai_config(f, probe.graph, config, config_path)

    rec = _Recovery(f, nmap, head, config.to_dict())
    expected = vocab.expected_tensors(config)
    placeholder_dtype = dtypes.dtype(dtype)
    every = dict(expected)  # plus tied copies, which exports keep and which must be verified equal
    every.update({tied: expected[target] for tied, target in vocab.tied_tensors(config).items()})
    hf_placeholders = from_canonical(nmap, DIALECT, head.prefix,
                                     {n: _ShapeOnly(s, placeholder_dtype) for n, s in every.items()}, config)
    rec.hf_shapes = {n: t.shape for n, t in hf_placeholders.items()}
    rec.expected = every
    expected_hf = from_canonical(nmap, DIALECT, head.prefix,
                                 {n: _ShapeOnly(s, placeholder_dtype) for n, s in expected.items()}, config)
    rec.collect()
    rec.claim_from_canonical(config)
    tensors = rec.resolve_claims()

    # Parameters the config requires that no evidence provides.
    canonical_of = _canonical_by_hf_name(nmap, head, config)
    missing = [n for n in expected_hf if n not in tensors]
    unexplained = []
    for hf_name in missing:
        canon = canonical_of.get(hf_name, [])
        role = vocab.BY_PATTERN[vocab.pattern_of(canon[0]) or ""].role if canon else ""
        proof = rec.zero_bias_proof(hf_name, canon) if role == "bias" else None
        if proof is not None:
            t = expected_hf[hf_name]
            tensors[hf_name] = ArrayTensor(np.zeros(t.shape, dtype=dtypes.dtype(config.dtype).numpy))
            rec.report.transforms.append({
                "source": None, "recovered": hf_name, "canonical": canon, "value": "zeros",
                "evidence": f"absent from the file, and the graph proves it zero: {proof} (exporters delete "
                            "additions of an all-zero bias)"})
        else:
            unexplained.append((hf_name, canon))
    if unexplained:
        lines = [f"'{h}' ({', '.join(c)}): {rec.explain_missing(h, c, config.hidden_size)}" for h, c in unexplained]
        raise MappingError(
            f"{len(unexplained)} parameter(s) cannot be recovered from the ONNX graph: " + " | ".join(lines),
            names=[h for h, _ in unexplained], file=f.path,
            hint="re-export the torch model with a dynamic batch and dynamic sequence axis, or convert the original "
                 "checkpoint instead")

    # Graph constants that are no parameter: reported, so nothing in the file goes unaccounted for.
    used_sources = {c.source for table in (rec.claims, rec.canonical_claims) for cl in table.values() for c in cl}
    ignored_names = {n for n, _ in rec.report.ignored}
    strays = []
    for name, tensor in f.tensors.items():
        if name in used_sources or name in ignored_names or not tensor.dtype.is_float or tensor.numel <= 1:
            continue
        uses = rec.graph.uses(name)
        reasons = {roles.CONSTANT_OPERANDS.get((u.node.op_type, u.index)) for u in uses}
        if uses and len(reasons) == 1 and None not in reasons:
            rec.report.ignored.append((name, reasons.pop()))
            continue
        where = ", ".join(sorted({f"{u.node.op_type} in '{u.scope}'" if u.scope is not None else u.node.op_type
                                  for u in uses})) or "no operator"
        if genai and name in f.initializers:
            # The builder writes parameters and rotary tables as initializers, computation constants as
            # Constant nodes: an initializer that is neither is something this reader does not know.
            strays.append(f"'{name}' {list(tensor.shape)} (read by {where})")
            continue
        rec.report.ignored.append((name, f"graph constant, not a parameter of the map (read by {where})"))
    if strays:
        raise MappingError(
            f"{len(strays)} initializer(s) of the onnxruntime-genai graph are neither a parameter of the map nor a "
            f"rotary table: {', '.join(strays)}", file=f.path,
            hint="the builder exported something this reader does not know; convert the original checkpoint instead")

    canonical, report = to_canonical(nmap, DIALECT, head.prefix, tensors, config, source=str(f.path))
    report.ignored[:0] = rec.report.ignored
    report.duplicates_dropped[:0] = rec.report.duplicates_dropped
    report.transforms[:0] = rec.report.transforms
    keys.record(report)
    files = [f.path, *f.data_files, config_path]
    # genai_config.json describes the ONNX package (it names model.onnx), not the model: not carried on.
    read = [*files, f.path.parent / GENAI_CONFIG] if genai else files
    return Checkpoint(path=path, format="onnx", container=f.container, dialect="onnx", config=config,
                      tensors=canonical, files=files, source_names=dict(f.tensors), report=report,
                      sidecars=common.side_files(path, read))


def _refuse_graph(f: OnnxFile, graph: GraphIndex, genai: bool) -> None:
    """Graphs whose parameters cannot be recovered exactly, refused by operator and initializer."""
    quantized = sorted({f"{n.op_type} '{n.name}'" for n in graph.nodes if n.op_type in roles.QUANTIZED
                        and any(v in f.tensors for v in n.input)})
    if quantized:
        raise MappingError(
            f"the graph holds quantized weights ({', '.join(quantized[:4])}{', ...' if len(quantized) > 4 else ''}): "
            "the float parameters they approximate cannot be recovered exactly", file=f.path,
            hint="convert the original checkpoint, or export it in float precision (onnxruntime-genai's builder: "
                 "-p fp32 or -p fp16)")
    interleaved = [f"{n.op_type} '{n.name}'" for n in graph.nodes if genai and
                   attribute(n, roles.INTERLEAVED_ROTARY.get(n.op_type, ""), 0) == 1]
    if interleaved:
        raise MappingError(
            f"{interleaved[0]} rotates interleaved feature pairs: the q and k rows of this graph are not in the "
            "canonical rotate-half order, and this reader does not reorder them", file=f.path,
            hint="convert the original checkpoint instead")


def _check_genai_config(f: OnnxFile, graph: GraphIndex, config: Any, config_path: Path) -> None:
    """The user copies config.json beside a builder graph by hand: check it against what the graph
    records (head counts of the attention operators, norm epsilons), since a config of another model
    with the same shapes would otherwise give a different model."""
    wanted = {"num_heads": config.num_heads, "kv_num_heads": config.num_kv_heads}
    eps = np.float32(config.norm_eps)
    for node in graph.nodes:
        checks: list[tuple[str, Any, Any]] = []
        if node.op_type in ("GroupQueryAttention", "MultiHeadAttention"):
            checks = [(a, attribute(node, a), v) for a, v in wanted.items()]
        elif node.op_type.endswith("LayerNormalization"):
            checks = [("epsilon", attribute(node, "epsilon"), eps)]
        for name, have, want in checks:
            if have is not None and np.float32(have) != np.float32(want):
                raise MappingError(
                    f"{node.op_type} '{node.name}' has {name}={have}, but config.json says {want}", file=f.path,
                    hint=f"{config_path} does not describe this graph; copy the config.json of the Hugging Face "
                         "model the builder read next to the .onnx file")


def _canonical_by_hf_name(nmap: NamingMap, head: Head, config: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry, dname in nmap.entries_for(DIALECT):
        layers = list(range(config.num_layers)) if entry.per_layer else [None]
        for layer in layers:
            name = dname.name.replace("{prefix}", head.prefix)
            canon = list(entry.canonical)
            if layer is not None:
                name = name.replace("{i}", str(layer))
                canon = [c.replace("{i}", str(layer)) for c in canon]
            out[name] = canon
    return out
