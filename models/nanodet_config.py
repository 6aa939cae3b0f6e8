"""NanoDet's own config files (``nanodet-m.yml``, ``nanodet-plus-m_416.yml``, a user's copy).

Read with PyYAML. What litedet takes from one: the architecture
(``model.arch.backbone/fpn/head``, matched to a registered NanoDet variant and
checked number by number), ``class_names`` and ``head.num_classes``,
``data.val.input_size``, ``data.val.keep_ratio`` (upstream's val resize) and
``data.val.pipeline.normalize``. Anything that litedet's definitions cannot
build is an error naming the config field and what litedet supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litedet.datasets import class_name_problem

__all__ = ["NanoDetConfig", "ConfigError", "read_nanodet_config"]


class ConfigError(ValueError):
    """The config file cannot be read, or describes a model litedet does not build."""


@dataclass(frozen=True)
class NanoDetConfig:
    path: str
    arch: str  # the registered architecture it describes
    num_classes: int
    class_names: tuple[str, ...]
    input_size: int  # square side
    keep_ratio: bool
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]


# (fpn name, backbone model_size) -> (registered name, fpn out_channels, head strides, head kernel)
_VARIANTS = {
    ("PAN", "1.0x"): ("nanodet_m", 96, (8, 16, 32)),
    ("PAN", "1.5x"): ("nanodet_m_1.5x", 128, (8, 16, 32)),
    ("GhostPAN", "1.0x"): ("nanodet_plus_m", 96, (8, 16, 32, 64)),
    ("GhostPAN", "1.5x"): ("nanodet_plus_m_1.5x", 128, (8, 16, 32, 64)),
}
_HEADS = {"PAN": "NanoDetHead", "GhostPAN": "NanoDetPlusHead"}


def _get(d: Any, path: str, where: str) -> Any:
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise ConfigError(f"{where}: the config has no '{path}'")
        cur = cur[key]
    return cur


MAX_CONFIG_BYTES = 1 << 20  # a NanoDet config is a few KB
MAX_CONFIG_NODES = 100_000  # values in the loaded config, aliases counted as often as they are used


def _check_size(d: Any, where: str) -> None:
    """Refuse a config whose aliases expand past MAX_CONFIG_NODES values (a YAML 'billion laughs'):
    counted without expanding anything, so a bomb costs nothing to refuse."""
    todo, seen = [d], 0
    while todo:
        x = todo.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise ConfigError(f"{where} expands to more than {MAX_CONFIG_NODES} values (YAML aliases repeated "
                              "inside each other?); a NanoDet config has a few hundred")
        if isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)


def _class_names(names: Any, where: str) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        bad = next((n for n in names if not isinstance(n, str)), names) if isinstance(names, list) else names
        raise ConfigError(f"{where}: class_names must be a list of strings; it holds {str(bad)[:80]!r} "
                          f"({type(bad).__name__})")
    for n in names:
        problem = class_name_problem(n.strip())
        if problem:
            raise ConfigError(f"{where}: class name {n[:80]!r}: {problem}")
    return [n.strip() for n in names]


def read_nanodet_config(path: str | Path) -> NanoDetConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" if not path.exists() else
                          f"config {path} is not a regular file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {path.stat().st_size} bytes; a NanoDet config is at most {MAX_CONFIG_BYTES}")
    try:
        d = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path} is not a YAML file: {str(e).splitlines()[0][:200]}") from None
    _check_size(d, str(path))
    if not isinstance(d, dict) or "model" not in d:
        raise ConfigError(f"{path} is not a NanoDet config (no 'model' section)")
    w = str(path)
    backbone, fpn, head = (_get(d, f"model.arch.{k}", w) for k in ("backbone", "fpn", "head"))
    if backbone.get("name") != "ShuffleNetV2":
        raise ConfigError(f"{w}: model.arch.backbone.name is {backbone.get('name')!r}; litedet builds NanoDet on "
                          "ShuffleNetV2 (nanodet_m, nanodet_m_1.5x, nanodet_plus_m, nanodet_plus_m_1.5x)")
    key = (fpn.get("name"), str(backbone.get("model_size", "1.0x")))
    if key not in _VARIANTS:
        raise ConfigError(f"{w}: fpn {key[0]!r} with ShuffleNetV2 {key[1]} is not a registered NanoDet; litedet has "
                          + ", ".join(f"{f} + {s}" for f, s in _VARIANTS))
    arch, channels, strides = _VARIANTS[key]
    checks = [("model.arch.head.name", head.get("name"), _HEADS[key[0]]),
              ("model.arch.fpn.out_channels", fpn.get("out_channels"), channels),
              ("model.arch.head.strides", tuple(head.get("strides", ())), strides),
              ("model.arch.head.reg_max", head.get("reg_max", 7), 7),
              ("model.arch.backbone.activation", backbone.get("activation", "LeakyReLU"), "LeakyReLU")]
    for field, got, want in checks:
        if got != want:
            raise ConfigError(f"{w}: {field} is {got!r}; {arch} has {want!r}")
    num_classes = _get(d, "model.arch.head.num_classes", w)
    names = d.get("class_names")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= 100_000:
        raise ConfigError(f"{w}: model.arch.head.num_classes is {str(num_classes)[:80]!r}; expected a class count")
    names = [f"class_{i}" for i in range(num_classes)] if names is None else _class_names(names, w)
    if len(names) != num_classes:
        raise ConfigError(f"{w}: model.arch.head.num_classes is {num_classes!r} but class_names has {len(names)} names")
    size = _get(d, "data.val.input_size", w)
    if not (isinstance(size, list) and len(size) == 2 and size[0] == size[1]):
        raise ConfigError(f"{w}: data.val.input_size is {size!r}; litedet converts square inputs ([w, w])")
    norm = _get(d, "data.val.pipeline.normalize", w)
    if not (isinstance(norm, list) and len(norm) == 2 and all(len(x) == 3 for x in norm)):
        raise ConfigError(f"{w}: data.val.pipeline.normalize must be [[3 means], [3 stds]] (BGR)")
    return NanoDetConfig(w, arch, num_classes, tuple(str(n) for n in names), int(size[0]),
                         bool(_get(d, "data.val.keep_ratio", w)), tuple(float(x) for x in norm[0]),
                         tuple(float(x) for x in norm[1]))
