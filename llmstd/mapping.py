"""Apply a naming map to tensors: dialect names -> canonical names and back, with transforms.

Nothing here loads tensor data except to verify that a tied or aliased duplicate really equals
the tensor it duplicates; everything else builds lazy tensors whose shapes are checked up front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from llmstd import transforms, vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import MappingError, name_list
from llmstd.findings import Findings, refuse, refuse_each
from llmstd.lazy_numpy import np
from llmstd.maps import DialectName, Entry, NamingMap, has_expert_placeholder
from llmstd.tensors import DerivedTensor, LazyTensor, concat, same_bytes

T = TypeVar("T")


@dataclass
class MappingReport:
    """What happened to each source tensor besides a plain rename, and to each config key that no
    canonical field reads (harmless ones with the map's reason; unreviewed ones carried unchanged)."""

    ignored: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    duplicates_dropped: list[tuple[str, str]] = field(default_factory=list)  # (name, verified equal to)
    transforms: list[dict[str, object]] = field(default_factory=list)  # applied layout transforms
    config_keys_harmless: dict[str, str] = field(default_factory=dict)  # key -> why it cannot matter
    config_keys_unreviewed: list[str] = field(default_factory=list)  # no rule covers it: carried, reported
    #: canonical field -> how the source's own runtime computes it otherwise than the config says
    #: (a KerasHub backbone's hard-wired epsilon); the canonical config states the documented value
    deviations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "ignored": [{"name": n, "reason": r} for n, r in self.ignored],
            "duplicates_dropped": [{"name": n, "equal_to": e} for n, e in self.duplicates_dropped],
            "transforms": self.transforms,
            "config_keys_harmless": dict(self.config_keys_harmless),
            "config_keys_unreviewed": list(self.config_keys_unreviewed),
            "deviations": dict(self.deviations),
        }


def _regex(pattern: str, prefix: str) -> re.Pattern[str]:
    text = re.escape(pattern.replace("{prefix}", prefix))
    for key in ("i", "e"):
        text = text.replace(rf"\{{{key}\}}", rf"(?P<{key}>0|[1-9]\d*)")
        # Keras numbering: no suffix for the first object of its class, then _1, _2, ...
        text = text.replace(rf"\{{_{key}\}}", rf"(?:_(?P<{key}>[1-9]\d*))?")
    return re.compile(text.replace(r"\{\*\}", r".+") + r"\Z")


def _keras_number(index: int) -> str:
    return f"_{index}" if index else ""


def _instantiate(pattern: str, prefix: str, layer: int | None, expert: int | None = None) -> str:
    name = pattern.replace("{prefix}", prefix)
    if layer is not None:
        name = name.replace("{i}", str(layer)).replace("{_i}", _keras_number(layer))
    if expert is not None:
        name = name.replace("{e}", str(expert)).replace("{_e}", _keras_number(expert))
    return name


def canonical_names(entry: Entry, layer: int | None, expert: int | None, num_experts: int) -> list[str]:
    """The canonical tensors one dialect tensor of ``entry`` stands for: of one expert, or -- for a
    packed dialect tensor (``expert`` None) of a per-expert entry -- of every expert in turn."""
    names = [_instantiate(p, "", layer) for p in entry.canonical]
    if not entry.per_expert:
        return names
    experts = [expert] if expert is not None else list(range(num_experts))
    return [n.replace("{e}", str(x)) for x in experts for n in names]


@dataclass(frozen=True)
class _Match:
    entry: Entry
    dname: DialectName
    layer: int | None
    alias: bool
    expert: int | None = None


class DialectMatcher:
    """Matches source names against one dialect of a map, for one head (name prefix)."""

    def __init__(self, nmap: NamingMap, dialect: str, prefix: str) -> None:
        self.nmap = nmap
        self.dialect = nmap.dialect(dialect)
        self.prefix = prefix
        self._patterns: list[tuple[re.Pattern[str], Entry, DialectName, bool]] = []
        for entry, dname in nmap.entries_for(dialect):
            self._patterns.append((_regex(dname.name, prefix), entry, dname, False))
            for alias in dname.aliases:
                self._patterns.append((_regex(alias, prefix), entry, dname, True))
        self._ignores = [(_regex(ig.pattern, prefix), ig.reason) for ig in self.dialect.ignore]

    def match(self, name: str) -> _Match | None:
        for regex, entry, dname, alias in self._patterns:
            m = regex.match(name)
            if m:
                layer = int(m.group("i") or 0) if "i" in regex.groupindex else None
                expert = int(m.group("e") or 0) if "e" in regex.groupindex else None
                return _Match(entry, dname, layer, alias, expert)
        return None

    def ignore_reason(self, name: str) -> str | None:
        for regex, reason in self._ignores:
            if regex.match(name):
                return reason
        return None

    def canonical_names_present(self, names: list[str]) -> set[str]:
        """Canonical names the given source names would produce (for 'present' config rules)."""
        out = set()
        for name in names:
            m = self.match(name)
            if m and not m.alias:
                out.update(_instantiate(p, "", m.layer, m.expert) for p in m.entry.canonical)
                out.update(m.entry.canonical)  # the bare pattern too, so rules can name "{i}" tensors
        return out

    def unmatched(self, names: list[str]) -> list[str]:
        return [n for n in names if self.match(n) is None and self.ignore_reason(n) is None]


def to_canonical(
    nmap: NamingMap,
    dialect: str,
    prefix: str,
    tensors: Mapping[str, LazyTensor],
    config: CanonicalConfig,
    *,
    source: str,
    findings: Findings | None = None,
) -> tuple[dict[str, LazyTensor], MappingReport]:
    """Rename and re-lay-out ``tensors`` (dialect names) into canonical tensors.

    Strict: the first problem raises a MappingError. With ``findings`` (lenient): every problem is
    recorded per tensor (``unexpected_tensor``, ``shape_mismatch``, ``missing_tensor``,
    ``tie_mismatch``, ``alias_mismatch``) and the canonical tensors that mapped cleanly are returned.
    """
    matcher = DialectMatcher(nmap, dialect, prefix)
    report = MappingReport()
    expected = vocab.expected_tensors(config)
    tied = vocab.tied_tensors(config)
    scope = config.to_dict()

    unmapped: list[str] = []
    groups: dict[tuple[int, int | None, int | None], tuple[_Match, str]] = {}
    aliases: list[tuple[str, _Match]] = []
    for name in tensors:
        m = matcher.match(name)
        if m is None:
            reason = matcher.ignore_reason(name)
            if reason is None:
                unmapped.append(name)
            else:
                report.ignored.append((name, reason))
            continue
        if m.alias:
            aliases.append((name, m))
        else:
            groups[(nmap.entries.index(m.entry), m.layer, m.expert)] = (m, name)
    if unmapped:
        hint = "add them to the map, list them under 'ignore' with a reason, or choose another --arch"
        refuse_each(findings, MappingError(
            f"{len(unmapped)} tensor(s) have no canonical name in the '{dialect}' dialect of map "
            f"{nmap.path}: {name_list(sorted(unmapped))}", names=sorted(unmapped), file=source, hint=hint,
        ), [("unexpected_tensor", MappingError(f"has no canonical name in the '{dialect}' dialect of map {nmap.path}",
                                               tensor=name, file=source, hint=hint)) for name in sorted(unmapped)])

    out: dict[str, LazyTensor] = {}
    reported: set[str] = set()  # canonical names whose tensor is stored but wrong (not also "missing")
    unexpected: dict[str, list[str]] = {}  # source name -> the canonical names it would give
    for (_, layer, expert), (m, name) in groups.items():
        canonical = canonical_names(m.entry, layer, expert, config.num_experts)
        steps = transforms.resolve(m.dname.steps, scope)
        if canonical and all(c in tied for c in canonical):
            target = tied[canonical[0]]
            if target not in expected:
                unexpected[name] = canonical
                continue
            report.duplicates_dropped.append((name, target))
            continue
        if not all(c in expected for c in canonical) or (layer is not None and layer >= config.num_layers):
            unexpected[name] = canonical
            continue
        source_tensor = tensors[name]
        try:
            shapes = transforms.forward_shapes(steps, [source_tensor.shape])
        except transforms.TransformError as exc:
            reported.update(canonical)
            refuse(findings, "shape_mismatch", MappingError(f"{exc}", tensor=name, file=source))
            continue
        wrong = [(cname, shape) for cname, shape in zip(canonical, shapes) if shape != expected[cname]]
        if wrong:
            reported.update(canonical)
            hint = "the config and the weights disagree; fix config.json"
            problems = [MappingError(
                f"maps to '{cname}' with shape {list(shape)}, but the config implies {list(expected[cname])}",
                tensor=name, file=source, hint=hint) for cname, shape in wrong]
            refuse_each(findings, problems[0], [("shape_mismatch", p) for p in problems])
            continue
        ranges = transforms.flat_ranges(steps, source_tensor.shape) if steps else None
        if ranges is not None:  # each canonical tensor is a run of the source's bytes: read only that run
            for cname, (start, shape) in zip(canonical, ranges):
                out[cname] = source_tensor.part(start, shape, f"{name} -> {cname}")
        else:
            fan_out = _FanOut(steps, source_tensor, len(canonical))
            for k, (cname, shape) in enumerate(zip(canonical, shapes)):
                out[cname] = fan_out.output(k, shape, f"{name} -> {cname}") if steps else source_tensor
        if steps:
            report.transforms.append({"source": name, "canonical": canonical,
                                      "transforms": [s.describe() for s in m.dname.steps]})
    if unexpected:
        hint = "check tie_word_embeddings, bias and layer-count settings in the config"
        names = sorted(unexpected)
        refuse_each(findings, MappingError(
            f"{len(names)} tensor(s) are not part of this model according to its config: {name_list(names)}",
            names=names, file=source, hint=hint,
        ), [("unexpected_tensor", MappingError(
            f"maps to {', '.join(unexpected[n])}, which a model with this config does not have", tensor=n,
            file=source, hint=hint)) for n in names])
    missing = [c for c in expected if c not in out and c not in reported]
    if missing:
        refuse_each(findings, MappingError(
            f"{len(missing)} canonical tensor(s) required by the config are missing: {name_list(missing)}",
            names=missing, file=source, hint="the checkpoint is incomplete or the config does not match it",
        ), [_missing(c, config, source) for c in missing])
    # Tied duplicates (e.g. lm_head.weight kept next to the embeddings in .bin files) must be equal.
    for name, target in list(report.duplicates_dropped):
        if target in out and not same_bytes(tensors[name], out[target]):
            refuse(findings, "tie_mismatch", MappingError(
                f"the config ties this tensor to '{target}', but their values differ",
                tensor=name, file=source,
                hint="set tie_word_embeddings to false in config.json if the model really has a separate head",
            ))
    for name, m in aliases:
        primary = _instantiate(m.dname.name, prefix, m.layer, m.expert)
        if primary not in tensors or not same_bytes(tensors[name], tensors[primary]):
            refuse(findings, "alias_mismatch", MappingError(
                f"is declared an alias of '{primary}' but differs from it or it is missing", tensor=name, file=source))
            continue
        report.duplicates_dropped.append((name, primary))
    return {c: out[c] for c in expected if c in out}, report


def _missing(name: str, config: CanonicalConfig, source: str | None) -> tuple[str, MappingError]:
    """The finding for a canonical tensor the config requires but the checkpoint lacks. A missing head
    under an untied config is far more often a wrong tying flag than a lost tensor: say so."""
    if name in vocab.TIED and not vocab.tied_tensors(config):
        return "tie_mismatch", MappingError(
            f"the config says the head is untied (tie_word_embeddings = false) but no '{name}' is stored",
            tensor=name, file=source, hint=f"set it true if the head shares '{vocab.TIED[name]}'")
    return "missing_tensor", MappingError("required by the config but not stored", tensor=name, file=source)


def require_canonical_set(tensors: Mapping[str, T], config: CanonicalConfig, *, source: str | None = None,
                          hint: str | None = None, findings: Findings | None = None) -> dict[str, T]:
    """``tensors`` in the config's order, checked to be exactly the canonical tensors ``config`` stores,
    each with the shape the config implies (values may be lazy tensors or arrays: only ``.shape`` is
    read). Strict: raises MappingError. With ``findings`` (lenient): records each problem
    (``missing_tensor``, ``unexpected_tensor``, ``tie_mismatch``, ``shape_mismatch``) and returns the
    tensors that fit."""
    expected = vocab.expected_tensors(config)
    tied = vocab.tied_tensors(config)
    missing = [n for n in expected if n not in tensors]
    unexpected = sorted(n for n in tensors if n not in expected)
    if missing or unexpected:
        parts = ([f"missing {name_list(missing)}"] if missing else []) + (
            [f"unexpected {name_list(unexpected)}"] if unexpected else [])
        refuse_each(findings, MappingError(f"tensors do not match the canonical config: {'; '.join(parts)}",
                                           names=missing + unexpected, file=source, hint=hint),
                    [*(_missing(n, config, source) for n in missing),
                     *(("tie_mismatch", MappingError(f"stored, but the config ties it to '{tied[n]}' (stored once)",
                                                     tensor=n, file=source)) if n in tied else
                       ("unexpected_tensor", MappingError("not part of the model its canonical config describes",
                                                          tensor=n, file=source)) for n in unexpected)])
    fitting: dict[str, T] = {}
    for name, shape in expected.items():
        if name not in tensors:
            continue
        got = tuple(getattr(tensors[name], "shape"))
        if got != shape:
            refuse(findings, "shape_mismatch", MappingError(
                f"shape {list(got)} differs from {list(shape)} implied by the config", tensor=name, file=source,
                hint=hint))
            continue
        fitting[name] = tensors[name]
    return fitting


class _FanOut:
    """Runs one forward chain once for all the canonical tensors it produces (q, k and v of a fused
    projection), handing each output out once; writers take them one after another, so the chain
    is not recomputed per output and at most one source tensor's worth of outputs is held."""

    def __init__(self, steps: list[transforms.ResolvedStep], source: LazyTensor, count: int) -> None:
        self.steps, self.source, self.count = steps, source, count
        self._pending: dict[int, np.ndarray] = {}

    def take(self, index: int) -> np.ndarray:
        if index not in self._pending:
            self._pending = dict(enumerate(transforms.apply_forward(self.steps, [self.source.load()])))
        return self._pending.pop(index)

    def output(self, index: int, shape: tuple[int, ...], description: str) -> LazyTensor:
        return _FanOutput(self, index, shape, description)


class _FanOutput(DerivedTensor):
    """One canonical tensor of a :class:`_FanOut`, which remembers its chain and source so that
    :func:`from_canonical` can cancel the chain against its own inverse."""

    def __init__(self, fan_out: _FanOut, index: int, shape: tuple[int, ...], description: str) -> None:
        super().__init__([], lambda _: fan_out.take(index), shape, fan_out.source.dtype, description)
        self.fan_out, self.index = fan_out, index


def _cancelled(sources: list[LazyTensor], steps: list[transforms.ResolvedStep], shape: tuple[int, ...],
               description: str) -> LazyTensor | None:
    """The dialect tensor built straight from the checkpoint's own tensor when ``steps`` undo the
    chain that produced ``sources`` -- e.g. GPT-2's fused, transposed c_attn read from PyTorch and
    written to TensorFlow, which both store ``[in, 3 * out]``. The chains' common tail cancels
    exactly (every transform has an exact inverse), so it is neither computed nor undone: the
    tensor stays a plain byte range that writers copy without loading. None when nothing cancels."""
    if not all(isinstance(s, _FanOutput) for s in sources):
        return None
    outputs: list[_FanOutput] = sources  # type: ignore[assignment]
    fan = outputs[0].fan_out
    if len(outputs) != fan.count or any(o.fan_out is not fan or o.index != k for k, o in enumerate(outputs)):
        return None
    common = 0
    while common < min(len(steps), len(fan.steps)) and steps[-1 - common] == fan.steps[-1 - common]:
        common += 1
    if common == 0:
        return None
    forward_rest, inverse_rest = fan.steps[:len(fan.steps) - common], steps[:len(steps) - common]
    if transforms.inverse_shapes(inverse_rest, transforms.forward_shapes(forward_rest, [fan.source.shape])) != [shape]:
        return None  # defensive: the shortcut must produce exactly what the full path would
    if not forward_rest and not inverse_rest:
        return fan.source
    return DerivedTensor([fan.source], lambda xs: transforms.apply_inverse(inverse_rest, transforms.apply_forward(
        forward_rest, xs))[0], shape, fan.source.dtype, description)


def from_canonical(
    nmap: NamingMap,
    dialect: str,
    prefix: str,
    tensors: Mapping[str, LazyTensor],
    config: CanonicalConfig,
) -> dict[str, LazyTensor]:
    """Dialect-named tensors for canonical ``tensors``, applying each entry's inverse transforms."""
    scope = config.to_dict()
    out: dict[str, LazyTensor] = {}
    covered: set[str] = set()
    layers: list[int | None]
    for entry, dname in nmap.entries_for(dialect):
        layers = list(range(config.num_layers)) if entry.per_layer else [None]
        experts: list[int | None] = list(range(config.num_experts)) if has_expert_placeholder(dname.name) else [None]
        for layer, expert in ((i, e) for i in layers for e in experts):
            canonical = canonical_names(entry, layer, expert, config.num_experts)
            have = [c in tensors for c in canonical]
            if not any(have):
                continue
            if not all(have):
                missing = [c for c, h in zip(canonical, have) if not h]
                raise MappingError(f"cannot build '{dname.name}' without {', '.join(missing)}", file=nmap.path)
            steps = transforms.resolve(dname.steps, scope)
            sources = [tensors[c] for c in canonical]
            name = _instantiate(dname.name, prefix, layer, expert)
            if steps:
                (shape,) = transforms.inverse_shapes(steps, [s.shape for s in sources])
                description = f"{', '.join(canonical[:3])}{', ...' if len(canonical) > 3 else ''} -> {name}"
                if transforms.flat_ranges(steps, shape) is not None:
                    # The inverse lays the canonical tensors end to end: stream them, never stack them.
                    out[name] = concat(sources, shape, description)
                else:
                    out[name] = _cancelled(sources, steps, shape, description) or DerivedTensor(
                        sources, lambda xs, st=steps: transforms.apply_inverse(st, xs)[0], shape, sources[0].dtype,
                        description)
            else:
                out[name] = sources[0]
            covered.update(canonical)
    uncovered = [c for c in tensors if c not in covered]
    if uncovered:
        raise MappingError(
            f"dialect '{dialect}' of map {nmap.path} has no name for {name_list(uncovered)}",
            names=uncovered, hint="extend the naming map for this dialect",
        )
    return out
