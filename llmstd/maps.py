"""Naming maps: load, validate and apply the per-architecture data files in ``naming_maps/``.

A map says, for one architecture, how each canonical tensor is named in every dialect and which
layout transforms lead there, and how a framework config (Hugging Face config.json) translates to the
canonical config. Maps are validated strictly on load: an unknown key, canonical name, dialect,
placeholder or transform is an error naming the file and the key. Applying a map is strict as well:
every source tensor is mapped, explicitly ignored with a reason, or reported as unmapped.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from llmstd import expr, naming_maps, transforms, vocab
from llmstd.config import FIELDS
from llmstd.errors import MapError

MAP_FORMAT = 1
#: Extra directories of map files, separated by os.pathsep; a map there overrides a built-in one.
MAPS_PATH_ENV = "LLMSTD_MAPS_PATH"

# Canonical config fields that no framework config supplies: they come from the tensors/head.
IMPLICIT_FIELDS = {"architecture", "head", "dtype", "extras"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class FieldRule:
    """How one canonical config field is read from / written to a framework config."""

    field: str
    key: str | None = None  # framework config key
    aliases: tuple[str, ...] = ()  # older spellings accepted on read
    default: Any = None  # literal or '= expression'; used when the key is absent (or null, unless nullable)
    has_default: bool = False
    values: tuple[tuple[str, str], ...] = ()  # framework value -> canonical value
    value_aliases: tuple[tuple[str, str], ...] = ()  # older framework values accepted on read only
    nullable: bool = False  # JSON null means "none" (None), not "absent, use the default"
    fixed: Any = None  # literal or '= expression': the field is implied by the architecture
    has_fixed: bool = False
    present: str | None = None  # the field is true iff this canonical tensor is stored


@dataclass(frozen=True)
class KeyRule:
    """A framework config key that no canonical field reads: harmless (no effect on the computation,
    carried verbatim) or refused unless its value is one of ``allow`` (the computation depends on it
    in a way the canonical config cannot express)."""

    key: str
    reason: str
    harmless: bool
    allow: tuple[Any, ...] = ()

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (JSON null counts as absent) leaves the computation as canonical describes it."""
        return self.harmless or value is None or any(_same_value(value, a) for a in self.allow)


def _same_value(a: Any, b: Any) -> bool:
    """JSON equality that keeps booleans apart from numbers (``1 == True`` in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


@dataclass(frozen=True)
class KerasKey:
    """One key of a KerasHub backbone config: the Hugging Face key of the same meaning and value
    (``hf``), the one value llmstd can express (``fixed``), or only how it is written (``write``)
    when several KerasHub keys make one Hugging Face value, which ``hf_derived`` reads; ``default``
    is KerasHub's own, used when a preset's config lacks the key."""

    key: str
    hf: str | None = None
    fixed: Any = None
    has_fixed: bool = False
    default: Any = None
    has_default: bool = False
    #: Where the values differ: ``read`` gives the Hugging Face value from the KerasHub config,
    #: ``write`` the KerasHub value from the Hugging Face config ('= expressions' using key()).
    read: str | None = None
    write: str | None = None


@dataclass(frozen=True)
class KerasTokenizer:
    """``[keras_hub.tokenizer]``: the KerasHub tokenizer class of an architecture, its kind
    (``wordpiece`` | ``byte_bpe``) and the special tokens the class requires in the vocabulary."""

    cls: str
    kind: str
    special: tuple[str, ...] = ()


@dataclass(frozen=True)
class KerasHubSpec:
    """``[keras_hub]``: the KerasHub classes of an architecture and how its backbone config translates.

    A map's own, never inherited through ``extends``: a KerasHub backbone names one architecture."""

    backbone: str  # the backbone class written (registered as keras_hub>{backbone})
    tasks: dict[str, str] = field(hash=False)  # head -> KerasHub task class
    also: tuple[str, ...]  # other backbone/task classes whose presets read as this architecture
    keys: dict[str, KerasKey] = field(hash=False)
    harmless: dict[str, str] = field(hash=False)  # key -> why it cannot change the computation
    unset: tuple[str, ...] = ()  # keys of features llmstd does not convert: null or absent, written null
    #: Hugging Face keys no KerasHub config holds, for presets that do not carry llmstd's copy of
    #: the Hugging Face config (huggingface/config.json): KerasHub's own saves.
    hf_defaults: dict[str, Any] = field(default_factory=dict, hash=False)
    #: Hugging Face keys that KerasHub's backbone implies: literals, or '= expressions' over its config.
    hf_derived: dict[str, Any] = field(default_factory=dict, hash=False)
    tokenizer: KerasTokenizer | None = None
    #: canonical field -> (condition, reason): where KerasHub computes the field otherwise than its
    #: config says, under a condition ('= expression' over its config) -- e.g. a hard-wired epsilon.
    deviations: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Head:
    name: str  # causal_lm | masked_lm | base
    cls: str  # framework class name written to / read from the framework config
    prefix: str  # substituted for {prefix} in this dialect's names


@dataclass(frozen=True)
class Ignore:
    pattern: str
    reason: str


@dataclass(frozen=True)
class DialectName:
    """One map entry as seen from one dialect."""

    name: str  # pattern with {i} and {prefix}
    steps: tuple[transforms.Step, ...]
    aliases: tuple[str, ...] = ()  # other names of the same tensor, verified equal and dropped


@dataclass(frozen=True)
class Entry:
    canonical: tuple[str, ...]  # canonical patterns produced (several for fused tensors)
    dialects: dict[str, DialectName] = field(hash=False)

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.canonical[0]

    @property
    def per_expert(self) -> bool:
        return "{e}" in self.canonical[0]


@dataclass(frozen=True)
class Dialect:
    name: str
    description: str
    heads: dict[str, Head] = field(hash=False)
    ignore: tuple[Ignore, ...] = ()
    #: A dialect that differs from another in a few names only (transformers 5's packed experts)
    #: says ``inherits = "hf"``: an entry without a name of its own uses that dialect's name
    #: (``dialect = false`` in the entry opts out), and so do its heads and ignore list.
    inherits: str | None = None


@dataclass(frozen=True)
class NamingMap:
    architecture: str
    description: str
    path: Path
    config_format: str | None  # e.g. "hf" (config.json) — the framework config this map translates
    model_types: tuple[str, ...]
    fields: dict[str, FieldRule] = field(hash=False)
    dialects: dict[str, Dialect] = field(hash=False)
    entries: tuple[Entry, ...] = ()
    keys: dict[str, KeyRule] = field(default_factory=dict, hash=False)  # harmless and refused config keys
    extends: tuple[str, ...] = ()  # the maps this one was composed from, nearest first
    #: ``[config.rope_4x]``: how transformers 4.x spells this architecture's rotary keys where it
    #: differs from the common spelling (see :class:`llmstd.hfconfig.Spelling`).
    rope_4x: dict[str, Any] = field(default_factory=dict, hash=False)
    abstract: bool = False  # a base for other maps only: names no architecture of its own
    keras_hub: KerasHubSpec | None = None

    def dialect(self, name: str) -> Dialect:
        try:
            return self.dialects[name]
        except KeyError:
            raise MapError(
                f"architecture '{self.architecture}' has no names for dialect '{name}'",
                file=self.path,
                hint=f"dialects in this map: {', '.join(self.dialects)}",
            ) from None

    def entries_for(self, dialect: str) -> list[tuple[Entry, DialectName]]:
        return [(e, e.dialects[dialect]) for e in self.entries if dialect in e.dialects]


# --------------------------------------------------------------------------------------------
# loading


def _err(path: Path, key: str, message: str, hint: str | None = None) -> MapError:
    return MapError(f"[{key}] {message}", file=path, hint=hint)


def _check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: Iterable[str],
                required: Iterable[str] = ()) -> None:
    if not isinstance(table, Mapping):
        raise _err(path, where, f"must be a table, got {type(table).__name__}")
    allowed = set(allowed)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _err(path, where, f"unknown key(s) {', '.join(unknown)}", hint=f"allowed: {', '.join(sorted(allowed))}")
    missing = [k for k in required if k not in table]
    if missing:
        raise _err(path, where, f"missing key(s) {', '.join(missing)}")


def _check_expression(path: Path, where: str, value: Any) -> None:
    if expr.is_expression(value):
        try:
            names = expr.names_in(value)
        except expr.ExpressionError as exc:
            raise _err(path, where, str(exc)) from None
        unknown = sorted(names - set(FIELDS))
        if unknown:
            raise _err(path, where, f"expression refers to unknown config field(s) {', '.join(unknown)}")


def _parse_field(path: Path, name: str, spec: Any) -> FieldRule:
    where = f"config.fields.{name}"
    if name not in FIELDS or name in IMPLICIT_FIELDS:
        raise _err(path, where, "is not a canonical config field a map can set",
                   hint="see llmstd/config.py for the schema")
    _check_keys(path, where, spec, ("key", "aliases", "default", "values", "value_aliases", "nullable", "fixed",
                                    "present"))
    kinds = [k for k in ("key", "fixed", "present") if k in spec]
    if len(kinds) != 1:
        raise _err(path, where, "needs exactly one of 'key', 'fixed' or 'present'")
    if "present" in spec:
        if vocab.pattern_of(spec["present"].replace("{i}", "0")) is None:
            raise _err(path, where, f"'present' names unknown canonical tensor '{spec['present']}'")
        return FieldRule(name, present=spec["present"])
    if "fixed" in spec:
        _check_expression(path, where, spec["fixed"])
        if set(spec) != {"fixed"}:
            raise _err(path, where, "'fixed' takes no other keys")
        return FieldRule(name, fixed=spec["fixed"], has_fixed=True)
    if not isinstance(spec["key"], str):
        raise _err(path, where, "'key' must be a string")
    values = spec.get("values", {})
    if not isinstance(values, Mapping) or not all(isinstance(v, str) for v in values.values()):
        raise _err(path, where, "'values' must map framework values to canonical strings")
    if len(set(values.values())) != len(values):
        raise _err(path, where, "'values' must be one-to-one so the map can be inverted")
    value_aliases = spec.get("value_aliases", {})
    if not isinstance(value_aliases, Mapping) or not set(value_aliases.values()) <= set(values.values()) \
            or set(value_aliases) & set(values):
        raise _err(path, where, "'value_aliases' must map framework values not in 'values' to canonical values "
                                "that 'values' writes")
    if not isinstance(spec.get("nullable", False), bool):
        raise _err(path, where, "'nullable' must be true or false")
    if "default" in spec:
        _check_expression(path, where, spec["default"])
    aliases = spec.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise _err(path, where, "'aliases' must be a list of strings")
    return FieldRule(
        name, key=spec["key"], aliases=tuple(aliases), default=spec.get("default"), has_default="default" in spec,
        values=tuple(values.items()), value_aliases=tuple(value_aliases.items()),
        nullable=spec.get("nullable", False),
    )


def has_layer_placeholder(name: str) -> bool:
    """Whether a dialect name holds a layer index: ``{i}``, or ``{_i}`` -- Keras 3's numbering of the
    objects of one class in a container (the first unnumbered, then ``_1``, ``_2``, ...)."""
    return "{i}" in name or "{_i}" in name


def has_expert_placeholder(name: str) -> bool:
    """Whether a dialect name holds an expert index, ``{e}`` or Keras-numbered ``{_e}``."""
    return "{e}" in name or "{_e}" in name


def _check_placeholders(path: Path, where: str, name: str, allowed: set[str]) -> None:
    found = set(_PLACEHOLDER.findall(name))
    bad = sorted(found - allowed)
    if bad:
        raise _err(path, where, f"name '{name}' uses unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}",
                   hint=f"allowed here: {', '.join('{' + a + '}' for a in sorted(allowed)) or 'none'}")


def _parse_dialect_name(path: Path, where: str, spec: Any, per_layer: bool, n_canonical: int,
                        placeholders: set[str]) -> DialectName:
    if isinstance(spec, str):
        spec = {"name": spec}
    _check_keys(path, where, spec, ("name", "transforms", "aliases"), ("name",))
    name = spec["name"]
    allowed = placeholders | ({"i", "_i"} if per_layer else set())
    allowed |= {"_e"} if "e" in allowed else set()
    _check_placeholders(path, where, name, allowed)
    if per_layer != has_layer_placeholder(name):
        raise _err(path, where, f"name '{name}' must contain {{i}} (or {{_i}}) exactly when the canonical name does")
    packed = "e" in allowed and not has_expert_placeholder(name)  # one tensor holding every expert
    steps = []
    for k, raw in enumerate(spec.get("transforms", [])):
        try:
            step = transforms.Step.parse(raw)
        except transforms.TransformError as exc:
            raise _err(path, f"{where}.transforms[{k}]", str(exc)) from None
        unknown = sorted(step.referenced_names() - set(FIELDS))
        if unknown:
            raise _err(path, f"{where}.transforms[{k}]", f"refers to unknown config field(s) {', '.join(unknown)}")
        steps.append(step)
    if packed and not steps:
        raise _err(path, where, f"name '{name}' holds every expert (it has no {{e}}), so it needs transforms that "
                                "unstack them")
    if not packed and not any(s.referenced_names() for s in steps):
        # With literal parameters the fan-out is known now; check it against the canonical names.
        try:
            n_in, n_out = transforms.chain_arity(transforms.resolve(steps, {}))
        except transforms.TransformError as exc:
            raise _err(path, where, str(exc)) from None
        if n_in != 1 or n_out != n_canonical:
            raise _err(path, where, f"transforms turn {n_in} tensor(s) into {n_out}, "
                                    f"but the entry lists {n_canonical} canonical name(s)")
    aliases = spec.get("aliases", [])
    for alias in aliases:
        _check_placeholders(path, where, alias, allowed)
    return DialectName(name, tuple(steps), tuple(aliases))


def _parse_dialect(path: Path, name: str, spec: Any) -> Dialect:
    where = f"dialects.{name}"
    if name not in vocab.DIALECTS:
        raise _err(path, where, f"unknown dialect '{name}'", hint=f"known dialects: {', '.join(vocab.DIALECTS)}")
    inherits = spec.get("inherits") if isinstance(spec, Mapping) else None
    _check_keys(path, where, spec, ("description", "heads", "ignore", "inherits"), () if inherits else ("heads",))
    heads = {}
    for head, hspec in spec.get("heads", {}).items():
        if head not in vocab.HEADS:
            raise _err(path, f"{where}.heads.{head}", f"unknown head '{head}'", hint=f"heads: {', '.join(vocab.HEADS)}")
        _check_keys(path, f"{where}.heads.{head}", hspec, ("class", "prefix"), ("class",))
        heads[head] = Head(head, hspec["class"], hspec.get("prefix", ""))
    ignores = []
    for k, ig in enumerate(spec.get("ignore", [])):
        _check_keys(path, f"{where}.ignore[{k}]", ig, ("pattern", "reason"), ("pattern", "reason"))
        # {*} (any run of characters) is allowed in ignore patterns only: optimizer slots exist for
        # every weight, and an ignore can never hide a tensor that an entry maps (entries match first).
        _check_placeholders(path, f"{where}.ignore[{k}]", ig["pattern"], {"i", "prefix", "*"})
        ignores.append(Ignore(ig["pattern"], ig["reason"]))
    return Dialect(name, spec.get("description", ""), heads, tuple(ignores), inherits)


def _parse_keys(path: Path, config: Mapping[str, Any], fields: Mapping[str, FieldRule]) -> dict[str, KeyRule]:
    """``[config.harmless]`` (key = reason) and ``[config.refuse]`` (key = { reason, allow })."""
    harmless, refuse = config.get("harmless", {}), config.get("refuse", {})
    _check_keys(path, "config.harmless", harmless, harmless.keys() if isinstance(harmless, Mapping) else ())
    _check_keys(path, "config.refuse", refuse, refuse.keys() if isinstance(refuse, Mapping) else ())
    read_by_fields = {k: f.field for f in fields.values() if f.key for k in (f.key, *f.aliases)}
    rules: dict[str, KeyRule] = {}
    for key, reason in harmless.items():
        if not isinstance(reason, str) or not reason:
            raise _err(path, f"config.harmless.{key}", "must give the reason the key cannot change the computation")
        rules[key] = KeyRule(key, reason, harmless=True)
    for key, spec in refuse.items():
        where = f"config.refuse.{key}"
        _check_keys(path, where, spec, ("reason", "allow"), ("reason",))
        allow = spec.get("allow", [])
        if not isinstance(allow, list):
            raise _err(path, where, "'allow' must be a list of the values that leave the computation unchanged")
        if key in rules:
            raise _err(path, where, "is listed as harmless too")
        rules[key] = KeyRule(key, str(spec["reason"]), harmless=False, allow=tuple(allow))
    for key in rules:
        if key in read_by_fields:
            raise _err(path, f"config.{'harmless' if rules[key].harmless else 'refuse'}.{key}",
                       f"is already read by the rule for canonical field '{read_by_fields[key]}'")
    return rules


def _parse_keras_hub(path: Path, spec: Any) -> KerasHubSpec:
    where = "keras_hub"
    _check_keys(path, where, spec, ("backbone", "tasks", "also", "keys", "harmless", "unset", "hf_defaults",
                                      "hf_derived", "tokenizer", "deviations"),
                ("backbone", "keys"))
    tasks = spec.get("tasks", {})
    _check_keys(path, f"{where}.tasks", tasks, vocab.HEADS)
    keys = {}
    for key, rule in spec["keys"].items():
        at = f"{where}.keys.{key}"
        _check_keys(path, at, rule, ("hf", "fixed", "default", "read", "write"))
        kinds = [k for k in ("hf", "fixed") if k in rule]
        if len(kinds) > 1 or (not kinds and "write" not in rule):
            raise _err(path, at, "needs one of 'hf' (the Hugging Face key of the same meaning), 'fixed' (the only "
                                 "value llmstd can express) or 'write' alone (a key read through hf_derived)")
        for side in ("read", "write"):
            if side in rule:
                if "fixed" in rule or (side == "read" and "hf" not in rule) or not expr.is_expression(rule[side]):
                    raise _err(path, f"{at}.{side}", "must be an '= expression' (using key()) of an 'hf' rule, "
                                                     "or 'write' alone")
                _check_expression(path, f"{at}.{side}", rule[side])
        keys[key] = KerasKey(key, rule.get("hf"), rule.get("fixed"), "fixed" in rule, rule.get("default"),
                             "default" in rule, rule.get("read"), rule.get("write"))
    harmless = spec.get("harmless", {})
    _check_keys(path, f"{where}.harmless", harmless, harmless.keys() if isinstance(harmless, Mapping) else ())
    for key, reason in harmless.items():
        if not isinstance(reason, str) or not reason or key in keys:
            raise _err(path, f"{where}.harmless.{key}", "must give a reason, for a key no rule in keras_hub.keys reads")
    also = spec.get("also", [])
    if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
        raise _err(path, f"{where}.also", "must be a list of KerasHub class names")
    unset = spec.get("unset", [])
    if not isinstance(unset, list) or not all(isinstance(k, str) and k not in keys and k not in harmless
                                              for k in unset):
        raise _err(path, f"{where}.unset", "must list keys that neither keras_hub.keys nor harmless name")
    hf_defaults = spec.get("hf_defaults", {})
    _check_keys(path, f"{where}.hf_defaults", hf_defaults,
                hf_defaults.keys() if isinstance(hf_defaults, Mapping) else ())
    hf_derived = spec.get("hf_derived", {})
    _check_keys(path, f"{where}.hf_derived", hf_derived, hf_derived.keys() if isinstance(hf_derived, Mapping) else ())
    for key, value in hf_derived.items():
        if expr.is_expression(value):
            _check_expression(path, f"{where}.hf_derived.{key}", value)
    tokenizer = None
    if "tokenizer" in spec:
        tok = spec["tokenizer"]
        _check_keys(path, f"{where}.tokenizer", tok, ("class", "kind", "special"), ("class", "kind"))
        if tok["kind"] not in ("wordpiece", "byte_bpe"):
            raise _err(path, f"{where}.tokenizer.kind", "must be 'wordpiece' or 'byte_bpe'")
        tokenizer = KerasTokenizer(tok["class"], tok["kind"], tuple(tok.get("special", [])))
    deviations = {}
    for name, dev in spec.get("deviations", {}).items():
        at = f"{where}.deviations.{name}"
        _check_keys(path, at, dev, ("when", "reason"), ("when", "reason"))
        if name not in FIELDS or not expr.is_expression(dev["when"]):
            raise _err(path, at, "names a canonical field and gives 'when' as an '= expression' over the KerasHub config")
        _check_expression(path, f"{at}.when", dev["when"])
        deviations[name] = (dev["when"], str(dev["reason"]))
    return KerasHubSpec(spec["backbone"], dict(tasks), tuple(also), keys, dict(harmless), tuple(unset),
                        dict(hf_defaults), dict(hf_derived), tokenizer, deviations)


def parse_map(path: Path, data: Mapping[str, Any], *, extends: tuple[str, ...] = ()) -> NamingMap:
    """Validate a decoded (already composed, see :func:`compose`) map; every problem is a MapError
    naming the file and key."""
    _check_keys(path, "map", data, ("format", "architecture", "description", "config", "dialects", "tensors",
                                    "extends", "abstract", "keras_hub"), ("format", "architecture"))
    if data["format"] != MAP_FORMAT:
        raise _err(path, "format", f"map format {data['format']!r} is not supported (this llmstd reads {MAP_FORMAT})")
    arch = data["architecture"]
    if not isinstance(arch, str) or not re.fullmatch(r"[a-z0-9_]+", arch):
        raise _err(path, "architecture", "must be a lowercase identifier")
    abstract = data.get("abstract", False)
    if not isinstance(abstract, bool):
        raise _err(path, "abstract", "must be true or false")
    if not abstract:
        _check_keys(path, "map", data, data.keys(), ("dialects", "tensors"))

    config = data.get("config", {})
    _check_keys(path, "config", config, ("format", "model_types", "fields", "harmless", "refuse", "rope_4x"))
    rope_4x = config.get("rope_4x", {})
    _check_keys(path, "config.rope_4x", rope_4x, ("theta_key", "partial_key", "partial_default", "scaling_type_key",
                                                  "scaling_top_level"))
    top_level = rope_4x.get("scaling_top_level", [])
    if not all(isinstance(rope_4x.get(k, ""), str) for k in ("theta_key", "partial_key", "scaling_type_key")) or \
            not isinstance(rope_4x.get("partial_default", 0.0), (int, float)) or \
            not (isinstance(top_level, list) and all(isinstance(k, str) for k in top_level)):
        raise _err(path, "config.rope_4x", "theta_key, partial_key and scaling_type_key name keys, partial_default "
                                           "is a number, scaling_top_level a list of keys")
    fields: dict[str, FieldRule] = {}
    for fname, fspec in config.get("fields", {}).items():
        fields[fname] = _parse_field(path, fname, fspec)
    if not abstract and fields:
        _check_keys(path, "config", config, config.keys(), ("format", "model_types", "fields"))
        missing = sorted(set(FIELDS) - IMPLICIT_FIELDS - set(fields))
        if missing:
            raise _err(path, "config.fields", f"does not say how to obtain {', '.join(missing)}",
                       hint="every canonical field needs a 'key', 'fixed' or 'present' rule")
    keys = _parse_keys(path, config, fields)

    dialects = {name: _parse_dialect(path, name, spec) for name, spec in data.get("dialects", {}).items()}
    for name, dialect in list(dialects.items()):
        if dialect.inherits is None:
            continue
        parent = dialects.get(dialect.inherits)
        if parent is None or parent.inherits is not None:
            raise _err(path, f"dialects.{name}.inherits", f"names '{dialect.inherits}', which is no dialect of this "
                                                         "map that inherits from none")
        dialects[name] = Dialect(name, dialect.description or parent.description,
                                 {**parent.heads, **dialect.heads}, parent.ignore + dialect.ignore, dialect.inherits)

    entries = []
    seen: dict[tuple[str, str], int] = {}
    for k, raw in enumerate(data.get("tensors", [])):
        where = f"tensors[{k}]"
        if not isinstance(raw, Mapping) or "canonical" not in raw:
            raise _err(path, where, "each entry needs a 'canonical' name")
        canonical = raw["canonical"]
        canonical = (canonical,) if isinstance(canonical, str) else tuple(canonical)
        for cname in canonical:
            if not isinstance(cname, str) or cname not in vocab.BY_PATTERN:
                raise _err(path, f"{where}.canonical", f"unknown canonical tensor {cname!r}",
                           hint="canonical names are listed in llmstd/vocab.py and docs/SPEC.md")
        per_layer = {"{i}" in c for c in canonical}
        if len(per_layer) != 1:
            raise _err(path, f"{where}.canonical", "fused canonical names must all be per-layer or all global")
        if len({"{e}" in c for c in canonical}) != 1:
            raise _err(path, f"{where}.canonical", "fused canonical names must all be per-expert or none")
        placeholders = {"prefix", "e"} if "{e}" in canonical[0] else {"prefix"}
        entry_dialects = {}
        for dname, dspec in raw.items():
            if dname == "canonical":
                continue
            if dspec is False:
                if dname not in dialects or dialects[dname].inherits is None:
                    raise _err(path, f"{where}.{dname}", "'false' opts an entry out of an inheriting dialect; "
                                                        f"'{dname}' inherits from none")
                continue
            if dname not in dialects:
                raise _err(path, f"{where}.{dname}",
                           f"unknown key '{dname}' (not a dialect declared under [dialects])",
                           hint=f"declared dialects: {', '.join(dialects)}")
            entry_dialects[dname] = _parse_dialect_name(
                path, f"{where}.{dname}", dspec, "{i}" in canonical[0], len(canonical), placeholders
            )
        for dname, dialect in dialects.items():
            parent = dialect.inherits
            if parent is not None and dname not in entry_dialects and raw.get(dname) is not False \
                    and parent in entry_dialects:
                entry_dialects[dname] = entry_dialects[parent]
        for dname in entry_dialects:
            for cname in canonical:
                if (dname, cname) in seen:
                    raise _err(path, f"{where}.canonical",
                               f"'{cname}' is already mapped for dialect '{dname}' by tensors[{seen[(dname, cname)]}]")
                seen[(dname, cname)] = k
        entries.append(Entry(canonical, entry_dialects))

    model_types = tuple(config.get("model_types", ())) if config else ()
    return NamingMap(arch, data.get("description", ""), path, config.get("format") if config else None,
                     model_types, fields, dialects, tuple(entries), keys, extends, abstract=abstract,
                     rope_4x=dict(rope_4x),
                     keras_hub=_parse_keras_hub(path, data["keras_hub"]) if "keras_hub" in data else None)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MapError(f"not valid TOML: {exc}", file=path) from None
    except OSError as exc:
        raise MapError(f"cannot read map file: {exc.strerror}", file=path) from None


def _entry_key(path: Path, where: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, Mapping) or "canonical" not in raw:
        raise _err(path, where, "each entry needs a 'canonical' name")
    canonical = raw["canonical"]
    return (canonical,) if isinstance(canonical, str) else tuple(canonical)


def compose(base: Mapping[str, Any], child: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The map ``child`` describes when it ``extends`` ``base`` (both decoded TOML), as one map.

    The child's scalars win; ``config.fields`` merge field by field; a key the child lists under
    ``config.harmless`` or ``config.refuse`` (or reads with a field rule) replaces the base's
    classification of it; dialects merge
    head by head, their ignore lists by pattern; a tensor entry with the same ``canonical`` names
    merges dialect by dialect (``dialect = false`` drops the base's name), other entries are appended.
    Nothing of either input is modified."""
    # A KerasHub backbone names one architecture: [keras_hub] is never inherited.
    out = {k: v for k, v in base.items() if k not in ("abstract", "keras_hub")}
    out.update({k: v for k, v in child.items() if k not in ("config", "dialects", "tensors", "extends")})
    config = dict(base.get("config", {}))
    for key, value in child.get("config", {}).items():
        if key == "fields":
            config["fields"] = {**config.get("fields", {}), **value}
        elif key not in ("harmless", "refuse"):
            config[key] = value
    overridden = set(child.get("config", {}).get("harmless", {})) | set(child.get("config", {}).get("refuse", {}))
    # A key the child's own fields read is no longer the base's harmless or refused key.
    for rule in child.get("config", {}).get("fields", {}).values():
        if isinstance(rule, Mapping) and isinstance(rule.get("key"), str):
            overridden |= {rule["key"], *(a for a in rule.get("aliases", []) if isinstance(a, str))}
    for table in ("harmless", "refuse"):
        merged = {k: v for k, v in config.get(table, {}).items() if k not in overridden}
        merged.update(child.get("config", {}).get(table, {}))
        if merged:
            config[table] = merged
    if config:
        out["config"] = config
    dialects = {name: dict(spec) for name, spec in base.get("dialects", {}).items()}
    for name, spec in child.get("dialects", {}).items():
        if not isinstance(spec, Mapping):
            raise _err(path, f"dialects.{name}", "must be a table")
        merged = dialects.setdefault(name, {})
        for key, value in spec.items():
            if key == "heads":
                merged["heads"] = {**merged.get("heads", {}), **value}
            elif key == "ignore":
                patterns = {ig.get("pattern") for ig in value if isinstance(ig, Mapping)}
                merged["ignore"] = [ig for ig in merged.get("ignore", []) if ig.get("pattern") not in patterns] + value
            else:
                merged[key] = value
    if dialects:
        out["dialects"] = dialects
    tensors = [dict(e) for e in base.get("tensors", [])]
    # Only base entries are merged into: two child entries with the same canonical names stay two,
    # so that validation reports the duplicate.
    index = {_entry_key(path, f"tensors[{k}]", e): k for k, e in enumerate(tensors)}
    for k, entry in enumerate(child.get("tensors", [])):
        key = _entry_key(path, f"tensors[{k}]", entry)
        if key in index:
            merged = tensors[index.pop(key)]
        else:
            merged = {}
            tensors.append(merged)
        for dialect, name in entry.items():
            if name is False and dialect in merged:
                del merged[dialect]  # drops the base's name
            else:
                merged[dialect] = name  # (false for a name the base lacks: opts out of an inheriting dialect)
    if tensors:
        out["tensors"] = tensors
    return out


def _resolve(path: Path, data: Mapping[str, Any], chain: tuple[Path, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``data`` with everything it extends composed in; also the names of the maps it extends."""
    parent = data.get("extends")
    if parent is None:
        return dict(data), ()
    if not isinstance(parent, str):
        raise _err(path, "extends", "must name one map")
    files = _map_files()
    sibling = path.parent / f"{parent}.toml"
    parent_path = sibling if sibling.is_file() and sibling != path else files.get(parent)
    if parent_path is None:
        raise _err(path, "extends", f"names '{parent}', which is no naming map",
                   hint=f"maps: {', '.join(sorted(files))}")
    if parent_path in chain or parent_path == path:
        raise _err(path, "extends", f"'{parent}' extends this map again (a cycle)")
    base, above = _resolve(parent_path, _read_toml(parent_path), (*chain, path))
    return compose(base, data, path), (parent, *above)


def load_map_file(path: Path) -> NamingMap:
    """Load, compose (``extends``) and validate one map file."""
    path = Path(path)
    data, extends = _resolve(path, _read_toml(path), ())
    return parse_map(path, data, extends=extends)


def _map_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    # The package's own directory: importlib.resources would cost ~8 ms of every command's start-up,
    # and the maps are plain files beside naming_maps/__init__.py however llmstd is installed.
    for item in sorted(Path(naming_maps.__file__).parent.glob("*.toml")):
        files[item.stem] = item
    for directory in filter(None, os.environ.get(MAPS_PATH_ENV, "").split(os.pathsep)):
        for item in sorted(Path(directory).glob("*.toml")):
            files[item.stem] = item
    return files


@functools.lru_cache(maxsize=None)
def _load_cached(path: Path, stamps: tuple[tuple[str, float], ...]) -> NamingMap:
    return load_map_file(path)


def available() -> list[str]:
    """Architectures that have a naming map (built-in plus LLMSTD_MAPS_PATH). Files whose name starts
    with an underscore hold abstract maps, bases that other maps extend."""
    return sorted(name for name in _map_files() if not name.startswith("_"))


def load(architecture: str) -> NamingMap:
    files = _map_files()
    if architecture not in files or architecture.startswith("_"):
        raise MapError(f"no naming map for architecture '{architecture}'",
                       hint=f"available: {', '.join(available())}; add naming_maps/{architecture}.toml")
    path = files[architecture]
    # A map is reloaded when it or any map it may extend changes on disk.
    stamps = tuple(sorted((str(p), p.stat().st_mtime) for p in files.values()))
    nmap = _load_cached(path, stamps)
    if nmap.architecture != architecture:
        raise MapError(f"file declares architecture '{nmap.architecture}' but is named '{architecture}.toml'", file=path)
    if nmap.abstract:
        raise MapError(f"map '{architecture}' is abstract (a base for other maps), not an architecture", file=path,
                       hint="abstract maps live in files whose name starts with '_'")
    return nmap


def for_model_type(model_type: str) -> NamingMap | None:
    """The map whose framework config declares this Hugging Face ``model_type``: the map of that
    name when it declares it (most do; parsing every map costs ~0.1 s of a conversion), else the
    first that does."""
    if model_type in available():
        nmap = load(model_type)
        if model_type in nmap.model_types:
            return nmap
    for arch in available():
        nmap = load(arch)
        if model_type in nmap.model_types:
            return nmap
    return None
