"""Translate a framework config (Hugging Face config.json) to and from the canonical config,
following the ``[config]`` rules of a naming map.

Reading applies the framework's declared defaults; writing checks that the canonical config is
expressible in the framework (fixed fields match, fields sharing one key agree) rather than writing
something that would load as a different model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llmstd import expr
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError
from llmstd.maps import FieldRule, NamingMap

# Keys every Hugging Face config carries that the canonical config expresses otherwise.
HF_STRUCTURAL_KEYS = ("model_type", "architectures", "dtype", "torch_dtype")


def _literal_or_expr(value: Any, scope: Mapping[str, Any]) -> Any:
    return expr.evaluate(value, scope) if expr.is_expression(value) else value


def _pending_names(rule: FieldRule) -> set[str]:
    for value in (rule.fixed, rule.default):
        if expr.is_expression(value):
            return expr.names_in(value)
    return set()


def config_from_framework(
    nmap: NamingMap,
    raw: Mapping[str, Any],
    *,
    head: str,
    dtype: str,
    present: Iterable[str],
    source: str,
) -> CanonicalConfig:
    """Build the canonical config from a framework config dict.

    ``present`` is the set of canonical tensor names found in the checkpoint (for 'present' rules).
    """
    present = set(present)
    values: dict[str, Any] = {}
    consumed = set(HF_STRUCTURAL_KEYS)
    pending = dict(nmap.fields)
    implicit = {"architecture": nmap.architecture, "head": head, "dtype": dtype}
    # Resolve in dependency order: expressions may refer to other fields (head_dim = hidden / heads).
    while pending:
        progressed = False
        for name, rule in list(pending.items()):
            if not _pending_names(rule) <= set(values) | set(implicit):
                continue
            values[name] = _read_field(nmap, rule, raw, {**implicit, **values}, present, consumed, source)
            del pending[name]
            progressed = True
        if not progressed:
            raise ConfigError(f"circular defaults between fields {', '.join(sorted(pending))}", file=nmap.path)
    extras = {k: v for k, v in raw.items() if k not in consumed}
    try:
        return CanonicalConfig(architecture=nmap.architecture, head=head, dtype=dtype, extras=extras, **values)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=source, hint="fix config.json or pass the right --arch") from None
    except TypeError as exc:  # pragma: no cover - guarded by map validation
        raise ConfigError(str(exc), file=source) from None


def _read_field(nmap: NamingMap, rule: FieldRule, raw: Mapping[str, Any], values: dict[str, Any],
                present: set[str], consumed: set[str], source: str) -> Any:
    if rule.present is not None:
        return rule.present in present
    if rule.has_fixed:
        return _literal_or_expr(rule.fixed, values)
    assert rule.key is not None
    found = [k for k in (rule.key, *rule.aliases) if k in raw]
    consumed.update(found)
    value = raw[found[0]] if found else None
    if value is None:
        if not rule.has_default:
            raise ConfigError(f"config lacks '{rule.key}' (canonical '{rule.field}') and the map gives no default",
                              file=source, hint=f"add \"{rule.key}\" to the config")
        return _literal_or_expr(rule.default, values)
    if rule.values:
        table = dict(rule.values)
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
            expected = _literal_or_expr(rule.fixed, scope)
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
    return out
