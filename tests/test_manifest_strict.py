"""The manifest is strict: a missing, unknown or mistyped field is an error naming
the field, never a silent default; the device config keys are written once."""

from __future__ import annotations

import json
import shutil

import pytest

from litedet.runtime.detector import Detector
from litedet.runtime.devconfig import config_keys, device_config_text
from litedet.runtime.manifest import MANIFEST_VERSION, ManifestError, load_manifest


def _edited(src, dst, fn):
    shutil.copytree(src, dst)
    d = json.loads((dst / "manifest.json").read_text())
    fn(d)
    (dst / "manifest.json").write_text(json.dumps(d))
    return dst


@pytest.mark.parametrize("section,field", [("postprocess", "center_offset"), ("postprocess", "score_threshold"),
                                           ("resize", "pad_mode"), ("input", "mean"), (None, "version"),
                                           (None, "reference")])
def test_a_missing_field_is_an_error_naming_it(seeded_bundle, tmp_path, section, field):
    b = _edited(seeded_bundle, tmp_path / "b", lambda d: (d[section] if section else d).pop(field))
    name = f"{section}.{field}" if section else field
    with pytest.raises(ManifestError, match=f"missing the field '{name}'"):
        load_manifest(b)


def test_an_unknown_field_is_an_error_naming_it(seeded_bundle, tmp_path):
    b = _edited(seeded_bundle, tmp_path / "b", lambda d: d["postprocess"].update(centre_offset=0.5))
    with pytest.raises(ManifestError, match="unknown field 'postprocess.centre_offset'"):
        load_manifest(b)


@pytest.mark.parametrize("path,value,match", [
    (("postprocess", "score_threshold"), "0.3", "'postprocess.score_threshold' is '0.3' \\(str\\); expected a number"),
    (("resize", "target"), 320.5, "'resize.target' is 320.5 \\(float\\); expected an integer"),
    (("postprocess", "multi_label"), 0, "'postprocess.multi_label' is 0 \\(int\\); expected true or false"),
    (("outputs",), {}, "'outputs' is \\{\\}; expected a list"),
    (("version",), "2", "version '2' is not supported; this litedet reads version 3"),
    (("version",), 1, "version 1 is not supported; this litedet reads version 3"),
])
def test_a_mistyped_field_is_an_error_naming_it(seeded_bundle, tmp_path, path, value, match):
    def edit(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    with pytest.raises(ManifestError, match=match):
        load_manifest(_edited(seeded_bundle, tmp_path / "b", edit))


def test_a_version_2_manifest_is_read_as_version_3_without_int8(seeded_bundle, tmp_path):
    def to_v2(d):
        d["version"] = 2
        del d["int8"], d["precision_plan"]

    m = load_manifest(_edited(seeded_bundle, tmp_path / "b", to_v2))
    assert m.version == MANIFEST_VERSION and m.int8 is None and m.precision_plan is None
    assert m.weight_storage == "fp16"


def test_int8_storage_and_the_int8_section_go_together(seeded_bundle, tmp_path):
    with pytest.raises(ManifestError, match="weight_storage is 'int8' but the int8 section is null"):
        load_manifest(_edited(seeded_bundle, tmp_path / "b", lambda d: d.update(weight_storage="int8")))


def test_a_manifest_that_is_not_an_object_is_refused(seeded_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    (b / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object; this one is a JSON list"):
        load_manifest(b)


@pytest.mark.parametrize("field", ["param", "bin"])
def test_manifest_paths_stay_inside_the_bundle(seeded_bundle, tmp_path, field):
    b = _edited(seeded_bundle, tmp_path / "b", lambda d: d.update({field: "../../other/model.ncnn.param"}))
    with pytest.raises(ManifestError, match=f"'{field}'.*inside the bundle"):
        Detector.from_bundle(b)


def test_written_manifests_have_the_current_version_and_reference_hashes(seeded_bundle):
    d = json.loads((seeded_bundle / "manifest.json").read_text())
    assert d["version"] == MANIFEST_VERSION
    assert set(d["reference"]["sha256"]) == {"image", "input", "outputs", "torchscript", "fp32_bin"}


def test_a_modified_reference_file_is_refused_by_parity(seeded_bundle, tmp_path):
    from litedet.convert.verify.torch_parity import run_parity

    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    (b / "reference" / "model.torchscript.pt").write_bytes(b"not a torchscript")
    with pytest.raises(ManifestError, match="model.torchscript.pt does not match the sha256"):
        run_parity(b, images=[], progress=False)


def test_device_config_keys_come_from_the_cpp_table(seeded_bundle):
    text = device_config_text(load_manifest(seeded_bundle), "m.param", "m.bin")
    written = [ln.split("=", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")]
    table = [k for k, _ in config_keys()]
    assert written == ["version", "param_sha256", "bin_sha256", *table]
    assert "center_offset" in table and len(table) == len(set(table))


def test_the_cpp_dump_has_exactly_the_table_keys(seeded_bundle):
    from litedet.convert.verify.cpp_core import CppCore

    m = load_manifest(seeded_bundle)
    parsed = CppCore().parse_config_text(device_config_text(m, "m.param", "m.bin"))
    assert list(parsed) == [k for k, _ in config_keys()]
    assert parsed["center_offset"] == 0.5 and parsed["strides"] == [8, 16, 32] and parsed["multi_label"] is False


def test_a_classification_bundle_gets_no_device_config(tmp_path):
    from litedet.convert.pipeline import convert_model

    r = convert_model("squeezenet1_1", tmp_path / "c", progress=False)
    with pytest.raises(ManifestError, match="device config and the Android demo's C\\+\\+ core run kinds argmax_mask, gfl"):
        device_config_text(r.manifest, "m.param", "m.bin")
