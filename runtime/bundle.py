"""The one place a bundle directory is opened (torch-free): the manifest read and validated once,
every graph and reference file resolved inside the bundle (through links too) and checked
against its sha256. ``convert``'s checks, ``parity`` (torch, C++, ARM), ``bench``, ``android
push`` and the runtime take a :class:`Bundle`; none resolves a bundle path on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litedet.hashing import sha256_file
from litedet.paths import file_kind

from .manifest import Manifest, ManifestError, bundle_path, load_manifest

__all__ = ["Bundle", "GraphFile", "open_bundle_dir"]

MAIN_GRAPH = "model"  # the name of a bundle's first (for most kinds its only) graph


@dataclass(frozen=True)
class GraphFile:
    """One ncnn graph of a bundle: where its files are and the blobs it is run by."""

    name: str  # MAIN_GRAPH, or the name its kind gives a further graph ("head")
    param: Path  # the shipped graph, or (an int8 bundle, fp32=True) the fp32 reference graph
    bin: Path  # the shipped weights, or the fp32 reference weights (Bundle.graph_files(fp32=True))
    input_blob: str
    output_blobs: tuple[str, ...]


class Bundle:
    """An opened bundle. ``Bundle.open(dir)`` validates the manifest and, with ``verify``, checks
    every graph file's sha256; reference files are checked when first asked for."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self._verified: dict[Path, str] = {}  # files whose sha256 was checked (and the sha256)

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "Bundle":
        path = Path(path)
        b = cls(path, load_manifest(path))
        if verify:
            for what, rel, want in b.manifest.graph_files():
                b._checked(b.file(rel, what), want)
        return b

    def file(self, rel: str, what: str) -> Path:
        """A file the manifest names, confined to the bundle after resolving links."""
        return bundle_path(self.path, rel, what)

    def graph_files(self, fp32: bool = False) -> dict[str, GraphFile]:
        """Every ncnn graph, the main one first, as the runner loads them; ``fp32``: with the fp32
        reference weights where the bundle has them (sha256-checked), else the shipped ones."""
        m = self.manifest

        def weights(rel: str, what: str, ref_key: str) -> Path:
            return self.reference(ref_key) if fp32 and self.has_reference(ref_key) else self.file(rel, what)

        # an int8 bundle's fp32 reference is a graph of its own: its param has no 8=1 layers
        param = self.reference("fp32_param") if fp32 and self.has_reference("fp32_param") else self.file(m.param, "param")
        out = {MAIN_GRAPH: GraphFile(MAIN_GRAPH, param, weights(m.bin, "bin", "fp32_bin"),
                                     m.input.blob, tuple(o.blob for o in m.outputs))}
        for name, g in m.extra_graphs().items():
            inp, outs = g.blobs()
            out[name] = GraphFile(name, self.file(g.param, f"postprocess.{name}.param"),
                                  weights(g.bin, f"postprocess.{name}.bin", f"{name}_fp32_bin"), inp, tuple(outs))
        return out

    def has_reference(self, key: str) -> bool:
        return bool(self.manifest.reference.get(key))

    def reference(self, key: str) -> Path:
        """A ``reference/`` file (the test card, the TorchScript, fp32 weights), confined to the
        bundle and checked against its sha256."""
        m = self.manifest
        rel = m.reference.get(key)
        if not rel:
            raise ManifestError(f"{self.path} has no reference {key}; parity needs a bundle written by 'litedet "
                                "convert' (a wrapped ncnn model has no PyTorch side)")
        p = self.file(rel, f"reference.{key}")
        want = m.reference.get("sha256", {}).get(key)
        if want:
            self._checked(p, want)
        elif not p.is_file():
            raise ManifestError(f"{self.path} is missing its reference file {rel}")
        return p

    def _checked(self, p: Path, want: str) -> Path:
        if self._verified.get(p) == want:
            return p
        if not p.is_file():
            kind = file_kind(p)
            raise ManifestError(f"bundle file missing: {p}" if kind == "missing" else
                                f"bundle file {p} is {kind}, not a regular file")
        got = sha256_file(p)
        if got != want:
            raise ManifestError(f"{p} does not match the sha256 in the manifest (it has {got[:16]}…, the manifest says "
                                f"{want[:16]}…); the bundle was modified")
        self._verified[p] = want
        return p


def open_bundle_dir(path: "str | Path | Bundle", verify: bool = True) -> Bundle:
    """``path`` opened as a Bundle (a Bundle is returned as it is)."""
    return path if isinstance(path, Bundle) else Bundle.open(path, verify)
