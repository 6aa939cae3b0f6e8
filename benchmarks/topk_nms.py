"""What NMS after OneNet's top-k changes: measured, not assumed.

    python -m litedet.benchmarks.topk_nms [--images DIR] [--limit N] [--out benchmarks/results]

The ``topk`` kind keeps the k best (class, location) pairs and runs no NMS (``nms_threshold`` 1.0),
as OneNet, whose one-to-one training is meant to leave one high score per object. On each photo
(the reference ImageNet sample by default) the same raw outputs are decoded as the top k (k 100,
score > 0.3) and then class-wise NMS at 0.5 and 0.6 IoU is applied to that list; reported: the
detections per image, the share NMS removes, the images where it changes anything, the same-class
pairs with IoU > 0.5 that the top-k keeps, and the agreement AP50 of the top-k list against the
NMS'd one (the duplicates NMS removes count as false positives there).

Two sources of outputs: the real trained NanoDet-Plus-m 416 (``../shared/reference``), decoded as
a top-k over all its class x location pairs: a head trained one-to-many, the case OneNet's paper
says needs NMS; and OneNet-R18 with seeded weights (no trained OneNet checkpoint is available
here: its maps are smooth, the worst case for duplicates). A trained OneNet's own figure needs
its checkpoint: ``--bundle`` takes any topk bundle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
K, THRESHOLD = 100, 0.3


def topk_decoder(bundle):
    """outputs, geometry -> the top-k detections without NMS, for a topk or a gfl bundle (gfl: every
    class of every cell above the threshold, no NMS, the best K: the same top-k over class x location)."""
    m = bundle.manifest
    p = m.postprocess
    if p.kind == "topk":
        loose = dataclasses.replace(p, nms_threshold=1.0, max_detections=K, score_threshold=THRESHOLD)
    elif p.kind == "gfl":
        loose = dataclasses.replace(p, nms_threshold=1.0, max_detections=K, score_threshold=THRESHOLD,
                                    multi_label=True)
    else:
        raise ValueError(f"{bundle.path}: postprocess kind {p.kind!r}; this measures topk or gfl bundles")
    mm = dataclasses.replace(m, postprocess=loose)
    from litedet.runtime.kinds import postprocess_kind

    decode = postprocess_kind(p.kind).decode
    return lambda outputs, geometry: decode(mm, outputs, geometry)


def with_nms(dets: list, iou: float) -> list:
    from litedet.runtime.boxes import nms

    if not dets:
        return []
    boxes = np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets], np.float32)
    keep = nms(boxes, np.array([d.score for d in dets], np.float32), np.array([d.label for d in dets]), iou)
    return [dets[i] for i in keep]


def duplicate_pairs(dets: list, iou: float = 0.5) -> int:
    from litedet.runtime.boxes import pairwise_iou

    n = 0
    for lab in {d.label for d in dets}:
        b = np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets if d.label == lab], np.float32)
        m = pairwise_iou(b, b) > iou
        n += int(np.triu(m, 1).sum())
    return n


def measure(bundle, photos: list[Path], label: str) -> dict:
    from litedet.convert.verify.metrics import coco_gt_from_results, coco_map
    from litedet.runtime import open_bundle
    from litedet.runtime.runner import load_image

    runner = open_bundle(bundle, threads=1)
    decode = topk_decoder(bundle)
    topk, after = {}, {0.5: {}, 0.6: {}}
    sizes = {}
    for p in photos:
        img = load_image(p)
        mat, g = runner.preprocess(img)
        dets = decode(runner.run_mat(mat), g)
        topk[p.name] = dets
        for iou in after:
            after[iou][p.name] = with_nms(dets, iou)
        sizes[p.name] = [img.shape[1], img.shape[0]]
    n = len(photos)
    row = {"source": label, "images": n, "topk_per_image": sum(map(len, topk.values())) / n,
           "duplicate_pairs_per_image": sum(duplicate_pairs(d) for d in topk.values()) / n}
    names = bundle.manifest.class_names
    for iou, kept in after.items():
        removed = sum(len(topk[k]) - len(kept[k]) for k in kept)
        gt = coco_gt_from_results(kept, sizes, names, THRESHOLD)
        ap = coco_map(gt, topk)
        row[f"nms{iou}"] = {"per_image": sum(map(len, kept.values())) / n,
                            "removed_share": removed / max(1, sum(map(len, topk.values()))),
                            "images_changed": sum(len(topk[k]) != len(kept[k]) for k in kept) / n,
                            "topk_AP50_vs_nms": ap.get("AP50"), "topk_AP_vs_nms": ap.get("AP")}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| outputs | images | top-k dets / image | same-class pairs IoU>0.5 / image | NMS IoU | dets / image after | "
             "removed | images changed | AP50 / AP of top-k vs NMS'd |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        for iou in (0.5, 0.6):
            q = r[f"nms{iou}"]
            lines.append(f"| {r['source']} | {r['images']} | {r['topk_per_image']:.1f} | {r['duplicate_pairs_per_image']:.1f} "
                         f"| {iou} | {q['per_image']:.1f} | {100 * q['removed_share']:.1f} % | "
                         f"{100 * q['images_changed']:.0f} % | {q['topk_AP50_vs_nms']:.3f} / {q['topk_AP_vs_nms']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(REFERENCE / "imagenet-sample"))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--bundle", action="append", default=[], help="a topk or gfl bundle to measure as well")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    from litedet.convert.pipeline import convert_model
    from litedet.runtime.bundle import Bundle

    photos = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[:a.limit]
    rows = []
    with tempfile.TemporaryDirectory(prefix="litedet-topk-nms-") as tmp:
        plus = REFERENCE / "nanodet-plus-m-416" / "nanodet-plus-m-416.param"
        convert_model("nanodet_plus_m", Path(tmp) / "plus", checkpoint=plus, input_size=416, progress=False)
        rows.append(measure(Bundle.open(Path(tmp) / "plus"), photos, "NanoDet-Plus-m 416, trained (one-to-many)"))
        convert_model("onenet_resnet18", Path(tmp) / "onenet", input_size=512, progress=False)
        rows.append(measure(Bundle.open(Path(tmp) / "onenet"), photos, "OneNet-R18 512, seeded (untrained)"))
        for b in a.bundle:
            rows.append(measure(Bundle.open(b), photos, str(b)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "topk_nms.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "topk_nms.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
