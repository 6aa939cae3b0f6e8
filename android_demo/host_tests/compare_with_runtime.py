"""Compare the app's ncnn path (app/src/main/cpp/litedet_ncnn.cpp, built for the
desktop as host_tests/ncnn_check) with the Python runtime on the same images.

    python compare_with_runtime.py BUNDLE NCNN_CHECK_BINARY

The bundle is exported as the app sees it (NAME.cfg + param/bin, via
litedet.runtime.devconfig), each image goes to the C++ side as RGBA (as the
camera delivers it) and to litedet.runtime.Detector as BGR, both single
threaded with fp16 on. Detections are matched by label and IoU; the script
prints one PASS/FAIL line per image and "N passed, N failed", and exits 1 on
any failure. Run by run_ncnn_check.sh.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from litedet.runtime import Detector
from litedet.runtime.devconfig import export_device_assets
from litedet.runtime.manifest import load_manifest

MIN_IOU = 0.98          # the two ncnn builds may differ in the last fp16 bits
MAX_SCORE_DIFF = 0.01
BORDERLINE = 0.02       # a detection this close to the score threshold may flip


def images(bundle: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    ref = bundle / "reference" / "image.png"
    if ref.is_file():
        out.append(("reference", cv2.imread(str(ref), cv2.IMREAD_COLOR)))
    try:
        import skimage.data as sd
    except ImportError as e:  # the synthetic images below still run
        print(f"(scikit-image not available: {e})")
        sd = None
    if sd is not None:
        photos = {"astronaut": lambda: sd.astronaut(), "chelsea": lambda: sd.chelsea(), "coffee": lambda: sd.coffee(),
                  "motorcycle_left": lambda: sd.stereo_motorcycle()[0]}
        for name, load in photos.items():
            try:
                rgb = load()
            except Exception as e:  # data file not installed
                print(f"(scikit-image photo {name} not available: {e})")
                continue
            out.append((name, cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2BGR)))
    rng = np.random.default_rng(7)
    base = out[-1][1] if out else rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    # odd sizes and orientations, as a centre crop of a camera frame can be
    out.append(("crop", np.ascontiguousarray(base[:517, :333])))
    out.append(("portrait", np.ascontiguousarray(cv2.resize(base, (301, 517)))))
    out.append(("landscape", np.ascontiguousarray(cv2.resize(base, (517, 301)))))
    out.append(("tiny", np.ascontiguousarray(cv2.resize(base, (20, 9)))))
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> int:
    bundle, binary = Path(sys.argv[1]), Path(sys.argv[2])
    m = load_manifest(bundle)
    threshold = m.postprocess.score_threshold
    det = Detector.from_bundle(bundle, threads=1, fp16=True)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_device_assets(bundle, tmp, name="model")
        imgs = images(bundle)
        args = [str(binary), str(tmp), "model", "1"]
        for i, (_, bgr) in enumerate(imgs):
            rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
            path = tmp / f"{i}.rgba"
            path.write_bytes(np.ascontiguousarray(rgba).tobytes())
            args += [str(path), str(rgba.shape[1]), str(rgba.shape[0])]
        run = subprocess.run(args, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"FAIL ncnn_check exited {run.returncode}: {run.stderr.strip()}")
            print("0 passed, 1 failed")
            return 1
        cpp: list[list[tuple]] = []
        for line in run.stdout.splitlines():
            f = line.split()
            if f[0] == "image":
                cpp.append([])
            else:
                cpp[-1].append((*map(float, f[:5]), int(f[5])))

        for (name, bgr), got in zip(imgs, cpp):
            want = [(d.x1, d.y1, d.x2, d.y2, d.score, d.label) for d in det.detect(bgr)]
            unmatched = list(got)
            problems, worst_iou, worst_score = [], 1.0, 0.0
            for w in want:
                cands = [g for g in unmatched if g[5] == w[5]]
                best = max(cands, key=lambda g: iou(g, w), default=None)
                if best is None or iou(best, w) < 0.5:
                    if w[4] - threshold > BORDERLINE:
                        problems.append(f"missed label {w[5]} score {w[4]:.3f}")
                    continue
                unmatched.remove(best)
                worst_iou = min(worst_iou, iou(best, w))
                worst_score = max(worst_score, abs(best[4] - w[4]))
            for g in unmatched:
                if g[4] - threshold > BORDERLINE:
                    problems.append(f"extra label {g[5]} score {g[4]:.3f}")
            if worst_iou < MIN_IOU:
                problems.append(f"min IoU {worst_iou:.4f} < {MIN_IOU}")
            if worst_score > MAX_SCORE_DIFF:
                problems.append(f"score diff {worst_score:.4f} > {MAX_SCORE_DIFF}")
            ok = not problems
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'} {name} {bgr.shape[1]}x{bgr.shape[0]}: python {len(want)}, app {len(got)} "
                  f"detections, min IoU {worst_iou:.5f}, max score diff {worst_score:.5f}"
                  + ("" if ok else " -- " + "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
