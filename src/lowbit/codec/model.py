"""Model files: a graph, encoded tensors and metadata in one container file.

Container header (``lowbit.codec.container``)::

    {"format": "lowbit.model",
     "graph":   {...},                  # ops, see lowbit.runtime.float_ops for the float ops
     "tensors": {name: entry, ...},     # entry["enc"] says how the section is encoded
     "meta":    {...}}                  # free-form: model name, accuracies, report, ...

Each tensor ``name`` has exactly one container section of the same name.  Encodings:

- ``"raw"``: the section is the numpy array itself (any dtype / shape);
- ``"dc"``: Deep Compression (``lowbit.codec.compressed``), a bytes section.

Other packages add encodings (packed binary / ternary / k-bit weights) with
``register_decoder(name, fn)``; ``fn(entry, section) -> ndarray`` gives the dense float value.
``ModelFile.tensor(name)`` decodes lazily, so a runtime can use the raw sections of packed
layers directly and never pay for a dense copy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from lowbit.codec import compressed, container
from lowbit.codec.container import FormatError

FORMAT = "lowbit.model"

Decoder = Callable[[dict, Any], np.ndarray]
Checker = Callable[[dict, Any], tuple]
_DECODERS: dict[str, Decoder] = {}
_CHECKERS: dict[str, Checker] = {}


def register_decoder(enc: str, fn: Decoder, check: Checker | None = None) -> None:
    """Teach ``ModelFile.tensor`` a new tensor encoding.  ``check(entry, section)``: the
    tensor's logical shape after a cheap check that the entry and section are well formed
    (raises FormatError); ``ModelFile.tensor_shape`` calls it, so shape inference validates
    every tensor the graph reads before anything is decoded or laid out."""
    _DECODERS[enc] = fn
    if check is not None:
        _CHECKERS[enc] = check


def _check_raw(entry: dict, section: Any) -> tuple:
    if not isinstance(section, np.ndarray):
        raise FormatError("raw tensor: the section is not an array")
    if section.dtype.kind not in "biuf":
        raise FormatError(f"raw tensor: dtype {section.dtype} is not a real number type")
    return tuple(section.shape)


def _check_dc(entry: dict, section: Any) -> tuple:
    if not isinstance(section, bytes):
        raise FormatError("dc tensor: the section is not a bytes section")
    return compressed.entry_shape(entry)


def _decode_raw(entry: dict, section: Any) -> np.ndarray:
    _check_raw(entry, section)
    if section.dtype.kind == "f" and not np.isfinite(section).all():
        raise FormatError("raw tensor: contains NaN or inf")
    return section


def _decode_dc(entry: dict, section: Any) -> np.ndarray:
    if not isinstance(section, bytes):
        raise FormatError("dc tensor: the section is not a bytes section")
    return compressed.decode(entry, section)


register_decoder("raw", _decode_raw, _check_raw)
register_decoder("dc", _decode_dc, _check_dc)


@dataclass
class Tensor:
    """One tensor ready to be saved: its header entry and its section (array or bytes)."""
    entry: dict[str, Any]
    data: Any
    stats: dict[str, Any] = field(default_factory=dict)


def raw(array: np.ndarray) -> Tensor:
    """Store an array as it is."""
    a = np.ascontiguousarray(array)
    return Tensor({"enc": "raw"}, a, {"bytes": a.nbytes})


def dc(weights: np.ndarray, **options: Any) -> Tensor:
    """Deep-Compression encode (options as ``lowbit.codec.compressed.encode``)."""
    e = compressed.encode(weights, **options)
    return Tensor(e.entry, e.data, e.stats)


def _document(graph: Mapping[str, Any], tensors: Mapping[str, Tensor],
              meta: Mapping[str, Any] | None) -> tuple[dict, dict]:
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"tensor {name!r}: expected lowbit.codec.model.Tensor (use raw() or "
                            f"dc()), got {type(t).__name__}")
    header = {"format": FORMAT, "graph": dict(graph),
              "tensors": {n: t.entry for n, t in tensors.items()}, "meta": dict(meta or {})}
    return header, {n: t.data for n, t in tensors.items()}


def encode(graph: Mapping[str, Any], tensors: Mapping[str, Tensor],
           meta: Mapping[str, Any] | None = None) -> bytes:
    """The exact bytes ``save`` would write (for size accounting)."""
    return container.encode(*_document(graph, tensors, meta))


def save(path: str | os.PathLike, graph: Mapping[str, Any], tensors: Mapping[str, Tensor],
         meta: Mapping[str, Any] | None = None) -> int:
    """Write a model file atomically; return its size in bytes."""
    return container.save(path, *_document(graph, tensors, meta))


@dataclass
class ModelFile:
    path: str
    graph: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    sections: dict[str, Any]
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def tensor(self, name: str) -> np.ndarray:
        """The dense value of tensor ``name`` (decoded once, then cached)."""
        if name not in self._cache:
            if name not in self.entries:
                raise KeyError(f"{self.path}: no tensor {name!r}; tensors: "
                               f"{', '.join(self.entries)}")
            entry = self.entries[name]
            enc = entry.get("enc") if isinstance(entry, dict) else None
            if not isinstance(enc, str) or enc not in _DECODERS:
                raise FormatError(f"{self.path}: tensor {name!r}: unknown encoding {enc!r} "
                                  f"(known: {', '.join(sorted(_DECODERS))})")
            try:
                self._cache[name] = _DECODERS[enc](entry, self.sections[name])
            except FormatError as e:
                raise FormatError(f"{self.path}: tensor {name!r}: {e}") from None
        return self._cache[name]

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """The logical shape of tensor ``name`` without decoding it (a raw section's own shape,
        else the entry's ``shape``), after checking that its entry and section are well formed
        (the encoding's checker: a packed section's layout and pad bits, a Deep-Compression
        entry's fields and size)."""
        if name not in self.entries:
            raise FormatError(f"{self.path}: no tensor {name!r}")
        entry = self.entries[name]
        enc = entry.get("enc") if isinstance(entry, dict) else None
        if not isinstance(enc, str) or enc not in _DECODERS:
            raise FormatError(f"{self.path}: tensor {name!r}: unknown encoding {enc!r} "
                              f"(known: {', '.join(sorted(_DECODERS))})")
        check = _CHECKERS.get(enc)
        if check is not None:
            try:
                return tuple(check(entry, self.sections[name]))
            except FormatError as e:
                raise FormatError(f"{self.path}: tensor {name!r}: {e}") from None
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  and v >= 0 for v in shape):
            raise FormatError(f"{self.path}: tensor {name!r}: field 'shape': expected a list of "
                              f"sizes, got {shape!r}")
        return tuple(shape)

    def check_op_values(self, where: str, op: dict) -> None:
        """Values of op ``op``'s tensors that must satisfy more than their shape: a folded
        threshold stage's flips are 0 / 1 and its thresholds integers in int32 (the kernels
        compare int32 accumulators), a BatchNorm's running variances are >= 0.  Called by
        ``lowbit.codec.shapes.infer`` after the op's shapes are checked."""
        def values(field: str) -> np.ndarray | None:
            name = op.get(field)
            return None if name is None else np.asarray(self.tensor(name))
        kind = op.get("op")
        if kind in ("qconv2d", "qdense") and op.get("out") == "bits":
            flip, thr = values("flip"), values("threshold")
            if flip is not None and not np.isin(flip, (0, 1)).all():
                raise FormatError(f"{where}: field 'flip': values must be 0 or 1")
            if thr is not None and not (np.all(thr == np.round(thr))
                                        and np.all(np.abs(thr) <= 2**31 - 1)):
                raise FormatError(f"{where}: field 'threshold': values must be integers in "
                                  f"int32 range")
        if kind == "batchnorm":
            var = values("var")
            if var is not None and (var < 0).any():
                raise FormatError(f"{where}: field 'var': a running variance is negative")

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor decoded to its dense value."""
        return {n: self.tensor(n) for n in self.entries}


def load(path: str | os.PathLike) -> ModelFile:
    """Read and verify a model file (see ``container.load``); tensors decode on access."""
    where = os.fspath(path)
    header, sections = container.load(where)
    return from_container(where, header, sections)


def from_container(where: str, header: dict, sections: dict) -> ModelFile:
    if header.get("format") != FORMAT:
        raise FormatError(f"{where}: header 'format': expected {FORMAT!r}, "
                          f"got {header.get('format')!r}")
    graph, entries, meta = header.get("graph"), header.get("tensors"), header.get("meta")
    if not isinstance(graph, dict) or not isinstance(entries, dict) or not isinstance(meta, dict):
        raise FormatError(f"{where}: header: 'graph', 'tensors' and 'meta' must be objects")
    bad = [n for n, e in entries.items() if not (isinstance(e, dict) and isinstance(e.get("enc"), str))]
    if bad:
        raise FormatError(f"{where}: header 'tensors': entry {bad[0][:80]!r} is not an object with "
                          f"an 'enc' string")
    if set(entries) != set(sections):
        raise FormatError(f"{where}: tensors without a section: "
                          f"{sorted(set(entries) - set(sections))}; sections without a tensor: "
                          f"{sorted(set(sections) - set(entries))}")
    return ModelFile(where, graph, entries, meta, sections)
