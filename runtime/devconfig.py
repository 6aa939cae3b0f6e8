"""The device-side config: a small key=value text generated from the manifest.

The C++ core (and the Android demo's JNI code) reads this file instead of
constants written by hand, so a model with other classes, input size or
strides needs no code edit. One key per line, ``#`` comments, lists
comma-separated; class names may not contain commas or newlines.

The keys, their order and their types are read from the C++ table
``litedet_config_keys.h`` (the demo's header, shipped beside this module), so
they are written once for the generator, the C++ parser and its C API.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from functools import lru_cache
from pathlib import Path

from litedet.atomic import replace_files

from .bundle import MAIN_GRAPH, Bundle, open_bundle_dir
from .kinds import kind_names, postprocess_kind
from .manifest import Manifest, ManifestError, check_class_names

__all__ = ["device_config_text", "export_device_assets", "asset_names", "config_keys", "config_version", "device_kinds",
           "tables", "KEYS_HEADER"]

KEYS_HEADER = Path(__file__).resolve().with_name("litedet_config_keys.h")


def device_kinds() -> tuple[str, ...]:
    """The postprocess kinds the device runs: those that say their NAME.cfg values
    (``PostprocessKind.device_values``); each has its tables LITEDET_<KIND>_KEYS and
    LITEDET_<KIND>_INFO_KEYS in litedet_config_keys.h."""
    return tuple(k for k in kind_names() if postprocess_kind(k).device_values is not None)


def tables(kind: str) -> tuple[str, str]:
    """(key table, info-key table) of a kind in litedet_config_keys.h."""
    return f"LITEDET_{kind.upper()}_KEYS", f"LITEDET_{kind.upper()}_INFO_KEYS"


def _block(text: str, macro: str) -> str:
    start = text.index(f"#define {macro}(X)")
    nxt = text.find("#define", start + 1)
    return text[start:nxt if nxt >= 0 else len(text)]


def _keys(text: str, macro: str) -> tuple[tuple[str, str], ...]:
    """(key, type) of a table's X(...) lines, with the tables it names (LITEDET_COMMON_KEYS(X)) inlined."""
    out: list[tuple[str, str]] = []
    for m in re.finditer(r"X\((\w+), (\w+), [^)]*\)|(LITEDET_\w+_KEYS)\(X\)", _block(text, macro).split("\n", 1)[1]):
        out += _keys(text, m.group(3)) if m.group(3) else [(m.group(1), m.group(2))]
    return tuple(out)


def _table(kind: str = "gfl") -> tuple[int, tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(config version, (key, type) of the kind's table, its info keys), read from the shared header
    and, for a kind that keeps its table in a header of its own (``PostprocessKind.device_keys``),
    from that one too."""
    own = postprocess_kind(kind).device_keys if kind in kind_names() else None
    return _read_table(kind, str(own) if own else "")


@lru_cache(maxsize=None)
def _read_table(kind: str, own_header: str) -> tuple[int, tuple[tuple[str, str], ...], tuple[str, ...]]:
    text = KEYS_HEADER.read_text() + ("\n" + Path(own_header).read_text() if own_header else "")
    version = int(re.search(r"#define LITEDET_CONFIG_VERSION (\d+)", text).group(1))
    keys_macro, info_macro = tables(kind)
    keys = _keys(text, keys_macro)
    info = tuple(re.findall(r"X\((\w+)\)", _block(text, info_macro)))
    if not keys or keys[0][0] != "kind":
        raise RuntimeError(f"{KEYS_HEADER}: {keys_macro} must list its keys, kind= first")
    return version, keys, info


def config_keys(kind: str = "gfl") -> list[tuple[str, str]]:
    """(key, type) of every required config key of a kind's NAME.cfg, in file order."""
    return list(_table(kind)[1])


def config_version() -> int:
    return _table()[0]


def _fmt(value, typ: str) -> str:
    if typ in ("str", "int"):
        return str(value)
    if typ == "real":
        return repr(float(value))
    if typ == "flag":
        return str(int(bool(value)))
    if typ == "reals":
        return ",".join(repr(float(v)) for v in value)
    return ",".join(str(v) for v in value)  # names, labels, ints


def _common(m: Manifest, param_name: str, bin_name: str) -> dict:
    """The keys every kind's config has: the files, the input and its preprocessing."""
    r = m.resize
    return {"kind": m.postprocess.kind, "param_sha256": m.param_sha256, "bin_sha256": m.bin_sha256,
            "architecture": m.architecture, "variant": m.variant, "precision": m.weight_storage, "param": param_name, "bin": bin_name,
            "input_blob": m.input.blob, "pixel_format": m.input.pixel_format, "mean": m.input.mean,
            "norm": m.input.norm, "target_size": r.target, "pad_multiple": r.pad_multiple, "pad_mode": r.pad_mode,
            "pad_value": r.pad_value, "resize_policy": r.policy, "pad_normalized": r.pad_normalized,
            "num_classes": m.num_classes, "class_names": m.class_names}


def asset_names(m: Manifest, name: str) -> dict[str, str]:
    """File names of a bundle's device assets: NAME.param/.bin (and NAME.head.param/.bin for a second graph)."""
    names = {"param": f"{name}.param", "bin": f"{name}.bin"}
    for g in m.extra_graphs():
        names.update({f"{g}_param": f"{name}.{g}.param", f"{g}_bin": f"{name}.{g}.bin"})
    return names


def device_config_text(m: Manifest, param_name: str, bin_name: str, names: dict[str, str] | None = None) -> str:
    """NAME.cfg for a bundle; ``names`` gives the further graphs' file names (asset_names)."""
    kind = m.postprocess.kind
    values_of = postprocess_kind(kind).device_values
    if values_of is None:
        raise ManifestError(f"{m.architecture} is a {m.task} bundle (postprocess kind {kind!r}); the "
                            f"device config and the Android demo's C++ core run kinds {', '.join(device_kinds())}")
    check_class_names(m.class_names)  # a Manifest built in memory has not been read through load_manifest
    names = {**asset_names(m, "m"), **(names or {}), "param": param_name, "bin": bin_name}
    values = {**_common(m, param_name, bin_name), **values_of(m, names)}
    version, keys, info = _table(kind)
    wanted = {k for k, _ in keys} | set(info)
    if set(values) != wanted:  # the header gained or lost a key: this table must follow
        raise RuntimeError(f"device config keys out of step with {KEYS_HEADER.name}: missing "
                           f"{sorted(wanted - set(values))}, unknown {sorted(set(values) - wanted)}")
    lines = ["# generated by litedet from manifest.json; do not edit by hand", f"version={version}"]
    lines += [f"{k}={values[k]}" for k in info]
    lines += [f"{k}={_fmt(values[k], t)}" for k, t in keys]
    return "\n".join(lines) + "\n"


def export_device_assets(bundle_dir: "str | Path | Bundle", dest: str | Path, name: str | None = None,
                         manifest: Manifest | None = None, fp32: bool = False) -> list[Path]:
    """Copy param/bin as NAME.param/NAME.bin and write NAME.cfg into ``dest``.

    Refuses a bundle whose files do not match its manifest's sha256s. All three files
    are written, or none: the previous ones stay when any write fails. ``manifest``: the
    bundle's manifest with other decode settings (``litedet eval`` decodes as upstream
    evaluates); ``fp32``: the fp32 reference weights in place of the shipped ones."""
    b = open_bundle_dir(bundle_dir)  # every graph file confined and sha256-checked
    m, dest = manifest or b.manifest, Path(dest)
    if fp32 and m.int8 is not None:  # the fp32 reference graph ships: the config says so
        m = dataclasses.replace(m, weight_storage="fp32", int8=None)
    name = name or m.variant.replace(".", "_")
    if not name.replace("-", "_").replace("_", "a").isalnum():
        raise ManifestError(f"asset name {name!r} must use letters, digits, '-' and '_' only")
    names = asset_names(m, name)
    # refuses kinds the device cannot run, before any write
    cfg = device_config_text(m, names["param"], names["bin"], names)
    if dest.exists() and not dest.is_dir():
        raise ManifestError(f"{dest} exists and is not a directory; the assets go into a directory")
    if dest.resolve().is_relative_to(b.path.resolve()):
        raise ManifestError(f"{dest} is inside the bundle {b.path}; the assets go into a folder of their own")
    dest.mkdir(parents=True, exist_ok=True)
    sources = {}
    for g in b.graph_files(fp32=fp32).values():
        prefix = "" if g.name == MAIN_GRAPH else f"{g.name}_"
        sources.update({f"{prefix}param": g.param, f"{prefix}bin": g.bin})
    # all or none: a half push would pair a new param/bin with an old cfg
    writes = [(dest / names[k], lambda t, src=src: shutil.copyfile(src, t)) for k, src in sources.items()]
    writes.append((dest / f"{name}.cfg", lambda t: t.write_text(cfg)))
    return replace_files(writes)
