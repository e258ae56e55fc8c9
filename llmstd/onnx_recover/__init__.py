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
        self.prefix, _ = _wrapper_prefix(self.index, params, scopes)
        for name, tensor in self.f.tensors.items():
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
        out: dict[str, LazyTensor] = {}
        for hf_name, claims in self.claims.items():
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
            self.report.transforms.extend(
                {"source": c.source, "recovered": hf_name, "evidence": c.evidence} for c in claims[:1]
                if c.evidence != f"initializer named '{c.source}'")
        return out

    def zero_bias_proof(self, hf_name: str) -> str | None:
        """Why the graph proves parameter ``hf_name`` (a bias) zero, or None when it does not."""
        module = hf_name.rsplit(".", 1)[0] if "." in hf_name else ""
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
                       for v in c.input if v != node.output[0]):
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
    dtype = common.dominant_dtype({n: c[0].tensor for n, c in probe.claims.items()}) if probe.claims else "float32"
    config, keys = read_config(nmap, raw, head=head.name, dtype=dtype, present=present, source=str(config_path))

    rec = _Recovery(f, nmap, head, config.to_dict())
    expected = vocab.expected_tensors(config)
    placeholder_dtype = dtypes.dtype(dtype)
    every = dict(expected)  # plus tied copies, which exports keep and which must be verified equal
    every.update({tied: expected[target] for tied, target in vocab.tied_tensors(config).items()})
    hf_placeholders = from_canonical(nmap, DIALECT, head.prefix,
                                     {n: _ShapeOnly(s, placeholder_dtype) for n, s in every.items()}, config)
    rec.hf_shapes = {n: t.shape for n, t in hf_placeholders.items()}
    expected_hf = from_canonical(nmap, DIALECT, head.prefix,
                                 {n: _ShapeOnly(s, placeholder_dtype) for n, s in expected.items()}, config)
    rec.collect()
    tensors = rec.resolve_claims()

    # Parameters the config requires that no evidence provides.
    canonical_of = _canonical_by_hf_name(nmap, head, config)
    missing = [n for n in expected_hf if n not in tensors]
    unexplained = []
    for hf_name in missing:
        canon = canonical_of.get(hf_name, [])
        role = vocab.BY_PATTERN[vocab.pattern_of(canon[0]) or ""].role if canon else ""
        proof = rec.zero_bias_proof(hf_name) if role == "bias" else None
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
    used_sources = {c.source for cl in rec.claims.values() for c in cl}
    ignored_names = {n for n, _ in rec.report.ignored}
    for name, tensor in f.tensors.items():
        if name in used_sources or name in ignored_names or not tensor.dtype.is_float or tensor.numel <= 1:
            continue
        uses = rec.graph.uses(name)
        where = ", ".join(sorted({f"{u.node.op_type} in '{u.scope}'" if u.scope is not None else u.node.op_type
                                  for u in uses})) or "no operator"
        rec.report.ignored.append((name, f"graph constant, not a parameter of the map (read by {where})"))

    canonical, report = to_canonical(nmap, DIALECT, head.prefix, tensors, config, source=str(f.path))
    report.ignored[:0] = rec.report.ignored
    report.duplicates_dropped[:0] = rec.report.duplicates_dropped
    report.transforms[:0] = rec.report.transforms
    keys.record(report)
    files = [f.path, *f.data_files, config_path]
    return Checkpoint(path=path, format="onnx", container=f.container, dialect="onnx", config=config,
                      tensors=canonical, files=files, source_names=dict(f.tensors), report=report,
                      sidecars=common.side_files(path, files))


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
