"""Translate a framework config (Hugging Face config.json) to and from the canonical config,
following the ``[config]`` rules of a naming map.

Reading applies the framework's declared defaults and accounts for every key: read into a canonical
field, listed by the map as harmless (with the reason), refused (the computation depends on it in a
way llmstd cannot express: an error naming the key), or -- when no rule covers it -- carried to the
output unchanged and reported as unreviewed. Hugging Face configs are read the way the transformers
generation that wrote them meant (:mod:`llmstd.hfconfig`). Writing checks that the canonical config
is expressible in the framework (fixed fields match, fields sharing one key agree) rather than writing
something that would load as a different model, and spells Hugging Face configs so that transformers
4.x and 5.x read the same model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmstd import expr, hfconfig, vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError
from llmstd.maps import FieldRule, NamingMap

# Keys every Hugging Face config carries that the canonical config expresses otherwise.
HF_STRUCTURAL_KEYS = ("model_type", "architectures", "dtype", "torch_dtype")


@dataclass
class ConfigKeys:
    """What became of each framework config key besides the canonical fields it was read into."""

    harmless: dict[str, str] = field(default_factory=dict)  # key -> why it cannot change the computation
    unreviewed: list[str] = field(default_factory=list)  # no rule covers it: carried unchanged, reported

    def record(self, report: Any) -> None:
        """Copy into a :class:`~llmstd.mapping.MappingReport`."""
        report.config_keys_harmless = dict(self.harmless)
        report.config_keys_unreviewed = list(self.unreviewed)


def reads_hf_rope(nmap: NamingMap) -> bool:
    """Whether the map reads rotary parameters from Hugging Face's keys (then hfconfig spells them)."""
    rule = nmap.fields.get("rope_theta")
    return nmap.config_format == "hf" and rule is not None and rule.key == "rope_theta"


def rope_spelling(nmap: NamingMap) -> hfconfig.Spelling:
    """What ``nmap`` says about its Hugging Face rotary keys: rope_theta's default and, when the map
    reads the sliding layers' base from a key of its own, that key and its default."""
    def literal(rule: FieldRule) -> float | None:
        return rule.default if rule.has_default and isinstance(rule.default, (int, float)) else None

    sliding = nmap.fields.get("rope_theta_sliding")
    if sliding is not None and sliding.key is None:
        sliding = None  # a fixed sliding base: no key of its own to spell
    keys_4x = nmap.rope_4x
    return hfconfig.Spelling(
        literal(nmap.fields["rope_theta"]),
        sliding.key if sliding is not None else None,
        literal(sliding) if sliding is not None else None,
        theta_key_4x=keys_4x.get("theta_key"), partial_key_4x=keys_4x.get("partial_key"),
        partial_default=keys_4x.get("partial_default"),
        scaling_type_key_4x=keys_4x.get("scaling_type_key", "rope_type"),
        scaling_top_level_4x=tuple(keys_4x.get("scaling_top_level", ())))


def _literal_or_expr(value: Any, scope: Mapping[str, Any], framework: Mapping[str, Any]) -> Any:
    return expr.evaluate(value, scope, framework) if expr.is_expression(value) else value


def _keys_derived_from(nmap: NamingMap) -> set[str]:
    """Framework keys that expressions read with key(): understood, and carried verbatim (in extras)
    so that writing reproduces them and the derived field is checked against them."""
    return {k for rule in nmap.fields.values() for k in _keys_derived_from_rule(rule)}


def _keys_derived_from_rule(rule: FieldRule) -> set[str]:
    return {k for value in (rule.fixed, rule.default) if expr.is_expression(value) for k in expr.keys_read(value)}


def _pending_names(rule: FieldRule) -> set[str]:
    for value in (rule.fixed, rule.default):
        if expr.is_expression(value):
            return expr.names_in(value)
    return set()


def read_config(
    nmap: NamingMap,
    raw: Mapping[str, Any],
    *,
    head: str,
    dtype: str,
    present: Iterable[str],
    source: str,
) -> tuple[CanonicalConfig, ConfigKeys]:
    """The canonical config for a framework config dict, and what became of the keys no canonical
    field reads. ``present`` is the set of canonical tensor names found in the checkpoint (for
    'present' rules)."""
    present = set(present)
    values: dict[str, Any] = {}
    consumed = set(HF_STRUCTURAL_KEYS)
    raw = dict(raw)
    spelling = rope_spelling(nmap) if reads_hf_rope(nmap) else None
    if spelling is not None and hfconfig.has_rope_keys(raw, spelling):
        rope = hfconfig.read_rope(raw, spelling, source)
        raw.update({"rope_theta": rope.theta, "rope_scaling": rope.scaling})
        if rope.partial_rotary_factor is not None:
            raw["partial_rotary_factor"] = rope.partial_rotary_factor
        if spelling.sliding_key is not None:
            raw[spelling.sliding_key] = rope.sliding_theta
        consumed.update(k for k in (hfconfig.V5_ROPE_KEY, "original_max_position_embeddings", *spelling.keys_4x)
                        if k in raw)
    pending = dict(nmap.fields)
    implicit = {"architecture": nmap.architecture, "head": head, "dtype": dtype}
    # Resolve in dependency order: expressions may refer to other fields (head_dim = hidden / heads).
    while pending:
        progressed = False
        for name, rule in list(pending.items()):
            if not _pending_names(rule) <= set(values) | set(implicit):
                continue
            try:
                values[name] = _read_field(nmap, rule, raw, {**implicit, **values}, present, consumed, source)
            except (expr.ExpressionError, TypeError) as exc:  # a key of the wrong type in a hostile config
                keys = sorted(_keys_derived_from_rule(rule)) or [rule.key or name]
                raise ConfigError(f"cannot derive canonical '{name}' from {', '.join(map(repr, keys))}: {exc}",
                                  file=source, hint="fix the key's value in config.json") from None
            del pending[name]
            progressed = True
        if not progressed:
            raise ConfigError(f"circular defaults between fields {', '.join(sorted(pending))}", file=nmap.path)
    if nmap.config_format == "hf" and "layer_types" in raw and "layer_types" not in consumed:
        uniform = vocab.SLIDING if values["sliding_window"] is not None else vocab.FULL
        hfconfig.check_layer_types(raw["layer_types"], [uniform] * values["num_layers"], source)
        consumed.add("layer_types")
    keys = _classify(nmap, raw, consumed, source)
    extras = {k: v for k, v in raw.items() if k not in consumed}
    try:
        config = CanonicalConfig(architecture=nmap.architecture, head=head, dtype=dtype, extras=extras, **values)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=source, hint="fix config.json or pass the right --arch") from None
    except TypeError as exc:  # pragma: no cover - guarded by map validation
        raise ConfigError(str(exc), file=source) from None
    return config, keys


def _classify(nmap: NamingMap, raw: Mapping[str, Any], consumed: set[str], source: str) -> ConfigKeys:
    """Harmless, refused (raises, naming every refused key) or unreviewed, for each unread key."""
    keys = ConfigKeys()
    refused = []
    derived = _keys_derived_from(nmap)
    for key in sorted(k for k in raw if k not in consumed and k not in derived):
        rule = nmap.keys.get(key)
        if rule is None:
            keys.unreviewed.append(key)
        elif rule.accepts(raw[key]):
            keys.harmless[key] = rule.reason
        else:
            allowed = f" (llmstd runs it only as {' or '.join(map(repr, rule.allow))})" if rule.allow else ""
            refused.append(f"'{key}' = {raw[key]!r}{allowed}: {rule.reason}")
    if refused:
        raise ConfigError(f"config key(s) change the computation in a way llmstd cannot express: {'; '.join(refused)}",
                          file=source, hint="this model cannot be converted faithfully; nothing was written")
    return keys


def _read_field(nmap: NamingMap, rule: FieldRule, raw: Mapping[str, Any], values: dict[str, Any],
                present: set[str], consumed: set[str], source: str) -> Any:
    if rule.present is not None:
        return rule.present in present
    if rule.has_fixed:
        return _literal_or_expr(rule.fixed, values, raw)
    assert rule.key is not None
    found = [k for k in (rule.key, *rule.aliases) if k in raw]
    consumed.update(found)
    value = raw[found[0]] if found else None
    if value is None and found and rule.nullable:
        return None
    if value is None:
        if not rule.has_default:
            raise ConfigError(f"config lacks '{rule.key}' (canonical '{rule.field}') and the map gives no default",
                              file=source, hint=f"add \"{rule.key}\" to the config")
        return _literal_or_expr(rule.default, values, raw)
    if rule.values:
        table = {**dict(rule.values), **dict(rule.value_aliases)}
        if value not in table:
            raise ConfigError(f"'{rule.key}' is {value!r}, which llmstd cannot represent",
                              file=source, hint=f"supported values: {', '.join(map(repr, table))}")
        return table[value]
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(rule.default, float):
        return float(value)
    return value


def config_to_framework(nmap: NamingMap, config: CanonicalConfig) -> dict[str, Any]:
    """Framework config keys for ``config`` (without model_type/architectures/dtype)."""
    scope = config.to_dict()
    out: dict[str, Any] = {k: v for k, v in config.extras.items() if k not in HF_STRUCTURAL_KEYS}
    written_by: dict[str, str] = {}
    for name, rule in nmap.fields.items():
        value = scope[name]
        if rule.present is not None:
            continue  # implied by which tensors are written
        if rule.has_fixed:
            expected = _literal_or_expr(rule.fixed, scope, config.extras)
            if value != expected:
                raise ConfigError(
                    f"architecture '{nmap.architecture}' requires {name} = {expected!r}, but the canonical config "
                    f"has {value!r}; this model cannot be written as '{nmap.architecture}'",
                    file=nmap.path,
                )
            continue
        assert rule.key is not None
        if rule.values:
            inverse = {c: f for f, c in rule.values}
            if value not in inverse:
                raise ConfigError(f"{name} = {value!r} has no spelling in '{rule.key}' for '{nmap.architecture}'",
                                  file=nmap.path, hint=f"expressible: {', '.join(inverse)}")
            value = inverse[value]
        if rule.key in written_by and out[rule.key] != value:
            raise ConfigError(
                f"'{rule.key}' would have to hold both {written_by[rule.key]} = {out[rule.key]!r} and "
                f"{name} = {value!r}; '{nmap.architecture}' cannot express this combination",
                file=nmap.path,
            )
        out[rule.key] = value
        written_by[rule.key] = name
        for alias in rule.aliases:
            out.pop(alias, None)
    if reads_hf_rope(nmap) and config.positional == "rope":
        spelling = rope_spelling(nmap)
        view = hfconfig.RopeView(config.rope_theta, config.rope_scaling, out.get("partial_rotary_factor"),
                                 config.rope_theta_sliding if spelling.sliding_key else None)
        out.update(hfconfig.portable_keys(view, spelling))
    return out
