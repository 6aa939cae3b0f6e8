"""Postprocess kinds: the registry the runtime picks its decoding from.

A manifest's ``postprocess.kind`` names one entry here. A kind is a
:class:`PostprocessKind`: the dataclass of its manifest section (every field
required), the task it answers, the output roles it reads, a consistency check
of a manifest, and ``decode`` (raw ncnn outputs + preprocessing geometry ->
results). The maths stay in small pure functions (``runtime/postprocess.py``);
a kind only wires them to the manifest. Built in: ``gfl`` (NanoDet) and
``softmax_topk`` (classifiers). A new family registers its own kind with
:func:`register_kind` from its own module, editing nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from litedet.registry import Registry

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["KindSpec", "PostprocessKind", "register_kind", "unregister_kind", "postprocess_kind", "kind_names"]


@dataclass
class KindSpec:
    """Base of every kind's manifest section; ``kind`` is its registry name."""

    kind: str


@dataclass(frozen=True)
class PostprocessKind:
    name: str
    task: str  # what the results are: detection, classification, ...
    spec: type  # a KindSpec subclass: the manifest's postprocess section
    roles: tuple[str, ...]  # output roles this kind reads
    validate: Callable[["Manifest"], None]  # raise ValueError naming the field when inconsistent
    decode: Callable[..., list]  # (manifest, outputs, geometry, **options) -> results (dataclasses with to_dict)
    describe: Callable[[Any], str] = str  # one result as a line of text (litedet CLI output)


_KINDS: Registry[PostprocessKind] = Registry("postprocess kind")


def register_kind(kind: PostprocessKind) -> PostprocessKind:
    if not (isinstance(kind.spec, type) and issubclass(kind.spec, KindSpec)):
        raise TypeError(f"postprocess kind {kind.name!r}: spec must be a KindSpec dataclass")
    return _KINDS.add(kind.name, kind)


unregister_kind = _KINDS.remove
postprocess_kind = _KINDS.get
kind_names = _KINDS.names


from . import gfl, softmax_topk  # noqa: E402,F401  (the built-in kinds register themselves)
