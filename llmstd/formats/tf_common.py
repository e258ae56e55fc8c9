"""What the two TensorFlow formats (``tf-h5`` and ``tf-ckpt``) share: choosing the dialect and head
that explain a set of TF tensor names, and the Keras model-scope convention.

TF files do not say which model class wrote them as reliably as a PyTorch config does (a TF
``config.json`` names the PyTorch class; a tf.train checkpoint names nothing), so reading tries each
(dialect, head) candidate the naming map declares, best guess first, and keeps the first one under
which the map explains every tensor and the config asks for exactly the tensors found. When none
fits, the error of the closest candidate is raised: it lists the tensors that do not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError, FormatError, LlmstdError, MappingError
from llmstd.mapping import DialectMatcher, MappingReport, to_canonical
from llmstd.maps import Head, NamingMap
from llmstd.tensors import LazyTensor


@dataclass
class Resolved:
    dialect: str
    head: Head
    config: CanonicalConfig
    tensors: dict[str, LazyTensor]  # canonical
    report: MappingReport
    source_names: dict[str, LazyTensor]  # as matched (after scope renaming)


def model_scope(names: Sequence[str], source: str) -> str | None:
    """The first path component shared by every Keras variable name (the model's name scope)."""
    scopes = {n.split("/", 1)[0] for n in names if "/" in n}
    if not names:
        return None
    if len(scopes) != 1 or any("/" not in n for n in names):
        raise FormatError(f"weights do not share one Keras model scope (found {', '.join(sorted(scopes)) or 'none'})",
                          file=source, hint="every weight name should start with the model's name, as Keras writes it")
    return scopes.pop()


def rescope(tensors: Mapping[str, LazyTensor], scope: str | None, wanted: str) -> dict[str, LazyTensor]:
    """Rename ``scope/...`` to ``wanted/...``.

    Keras numbers a model's scope per process (``tf_bert_model_1`` for the second instance), and
    transformers' loader ignores that first component; the naming maps spell the class's default
    scope, so names are read relative to it.
    """
    if scope is None or scope == wanted:
        return dict(tensors)
    return {wanted + name[len(scope):]: t for name, t in tensors.items()}


def first_dialect_with_head(nmap: NamingMap, dialects: Sequence[str], head: str, what: str) -> str:
    """The first of ``dialects`` (in order of preference) the map has for ``head``."""
    for dialect in dialects:
        if dialect in nmap.dialects and head in nmap.dialects[dialect].heads:
            return dialect
    raise MappingError(f"'{nmap.architecture}' has no {what} naming for head '{head}'", file=nmap.path,
                       hint="add a tf_llmstd dialect for it to the naming map")


Candidate = tuple[str, Head]  # (dialect, head)


def resolve(nmap: NamingMap, candidates: Sequence[Candidate], tensors: Mapping[str, LazyTensor],
            make_config: Callable[[Head, set[str], Mapping[str, LazyTensor]], CanonicalConfig], *,
            source: str, scoped: bool) -> Resolved:
    """Map ``tensors`` to canonical under the first candidate that explains them completely.

    ``scoped``: names carry a Keras model scope, normalised to each candidate head's own scope.
    """
    names = list(tensors)
    scope = model_scope(names, source) if scoped else None
    ranked = []
    for order, (dialect, head) in enumerate(candidates):
        renamed = rescope(tensors, scope, head.prefix.split("/", 1)[0]) if scoped else dict(tensors)
        unmatched = DialectMatcher(nmap, dialect, head.prefix).unmatched(list(renamed))
        ranked.append((len(unmatched), order, dialect, head, renamed))
    ranked.sort(key=lambda r: (r[0], r[1]))
    first_error: LlmstdError | None = None
    for _, _, dialect, head, renamed in ranked:
        matcher = DialectMatcher(nmap, dialect, head.prefix)
        try:
            present = matcher.canonical_names_present(list(renamed))
            config = make_config(head, present, renamed)
            canonical, report = to_canonical(nmap, dialect, head.prefix, renamed, config, source=source)
        except (MappingError, ConfigError) as exc:
            first_error = first_error or exc
            continue
        return Resolved(dialect, head, config, canonical, report, renamed)
    assert first_error is not None, "resolve() needs at least one candidate"
    raise first_error


def tf_candidates(nmap: NamingMap, dialects: Sequence[str], preferred_head: str | None = None) -> list[Candidate]:
    """(dialect, head) pairs the map declares, the preferred head first within each dialect."""
    out: list[Candidate] = []
    for dialect in dialects:
        if dialect not in nmap.dialects:
            continue
        heads = list(nmap.dialects[dialect].heads.values())
        heads.sort(key=lambda h: h.name != preferred_head)
        out.extend((dialect, h) for h in heads)
    return out


def layer_groups(named: Mapping[str, LazyTensor]) -> list[tuple[str, list[tuple[str, LazyTensor]]]]:
    """Keras layer groups for an h5 file: the second path component of each variable name
    (``<model scope>/<top-level layer>/...``), in order of first appearance.

    A name ``<weight>@<layer>`` (an h5 repeat, see :data:`llmstd.converters.h5_io.REPEAT_SEP`) lists the
    weight again under ``<layer>``, written only when the model has that layer.
    """
    from llmstd.converters.h5_io import REPEAT_SEP

    groups: dict[str, list[tuple[str, LazyTensor]]] = {}
    repeats: list[tuple[str, str, LazyTensor]] = []
    for name, tensor in named.items():
        if REPEAT_SEP in name:
            weight, layer = name.rsplit(REPEAT_SEP, 1)
            repeats.append((layer, weight, tensor))
            continue
        parts = name.split("/")
        if len(parts) < 3:
            raise FormatError(f"variable name '{name}' has no '<model scope>/<layer>/' prefix",
                              hint="every h5 dialect name must be scoped; fix the naming map")
        groups.setdefault(parts[1], []).append((name, tensor))
    for layer, weight, tensor in repeats:
        if layer in groups:
            groups[layer].append((weight, tensor))
    return list(groups.items())
