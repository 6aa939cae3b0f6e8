"""The metrics of `litedet eval`, per task: COCO mAP through faster-coco-eval (none of COCOeval is
written here) and top-1 / top-5. Pure functions over decoded results, so tests hit them directly.

Detection, agreement mode: the reference backend's detections with score >= ``gt_score`` are the
ground truth and a backend's detections (decoded as upstream evaluates: score 0.05, every class,
100 boxes) are scored against them. The reference scored against itself gives exactly 1.0 (its
own boxes match themselves, ranked first), so 1.0 means nothing was lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ClassLabels", "read_synsets", "synset_labels", "topk_metrics", "coco_gt_from_results",
           "coco_gt_from_file", "coco_map", "COCO_KEYS"]

COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


class MetricError(ValueError):
    """Labels or annotations that cannot be used (one line: what, and what would be right)."""


# -- classification --------------------------------------------------------------
@dataclass
class ClassLabels:
    """Each image's true class index (images without a label are not scored)."""

    by_image: dict[str, int]
    names: list[str]  # index -> readable name


def read_synsets(path: str | Path) -> tuple[list[str], list[str]]:
    """synset_words.txt (``n01440764 tench, Tinca tinca`` per line: line i is class i) -> (wnids, names)."""
    p = Path(path)
    try:
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise MetricError(f"--labels synset {p}: cannot read it ({e.__class__.__name__}); expected ncnn's "
                          "synset_words.txt") from None
    wnids = [ln.split()[0] for ln in lines]
    if not wnids or not all(re.fullmatch(r"n\d{8}", w) for w in wnids):
        raise MetricError(f"--labels synset {p}: expected lines 'n01440764 tench, ...' (a WordNet id, then names)")
    return wnids, [ln.split(None, 1)[1].split(",")[0] if " " in ln else ln for ln in lines]


def synset_labels(images: list[str], synsets: str | Path, num_classes: int) -> ClassLabels:
    """Labels from file names ``<wnid>_<anything>``: the wnid's line in the synset file."""
    wnids, names = read_synsets(synsets)
    if len(wnids) != num_classes:
        raise MetricError(f"--labels synset {synsets} lists {len(wnids)} classes; the bundle has {num_classes}")
    index = {w: i for i, w in enumerate(wnids)}
    by_image = {n: index[n.split("_")[0]] for n in images if n.split("_")[0] in index}
    if not by_image:
        raise MetricError(f"no image name starts with a WordNet id of {Path(synsets).name} (expected e.g. "
                          "n01440764_tench.JPEG); these labels match none of the images")
    return ClassLabels(by_image, names)


def topk_metrics(results: dict[str, list], labels: ClassLabels | None, reference: dict[str, list] | None) -> dict:
    """top-1 / top-5 against labels (on the labelled images), and against the reference backend:
    top-1 agreement and the mean overlap of the top-5 sets. Per class: which images it got wrong."""
    out: dict = {"images": len(results)}
    if labels is not None:
        scored = [n for n in results if n in labels.by_image]
        top = {n: [c.label for c in results[n][:5]] for n in scored}
        out["labelled"] = len(scored)
        out["top1"] = _mean([top[n][:1] == [labels.by_image[n]] for n in scored])
        out["top5"] = _mean([labels.by_image[n] in top[n] for n in scored])
        out["wrong"] = sorted(n for n in scored if top[n][:1] != [labels.by_image[n]])
    if reference is not None:
        common = [n for n in results if n in reference]
        out["agreement_top1"] = _mean([results[n][0].label == reference[n][0].label for n in common])
        out["agreement_top5"] = _mean([len({c.label for c in results[n][:5]} & {c.label for c in reference[n][:5]}) / 5
                                       for n in common])
    return out


def _mean(v: list) -> float | None:
    return float(np.mean(v)) if v else None


# -- detection -------------------------------------------------------------------
@dataclass
class CocoGT:
    """A COCO ground truth (faster-coco-eval's COCO) and how the model's labels map to its categories."""

    coco: object
    image_ids: dict[str, int]  # image name -> COCO image id
    category_of_label: dict[int, int]  # model label -> COCO category id
    source: str
    names: dict[int, str] = field(default_factory=dict)  # category id -> name


def _quiet_coco(d: dict):
    from faster_coco_eval import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(d)


def coco_gt_from_results(reference: dict[str, list], sizes: dict[str, list[int]], class_names: list[str],
                         gt_score: float) -> CocoGT:
    """Agreement ground truth: the reference backend's detections with score >= gt_score."""
    images = [{"id": i + 1, "file_name": n, "width": sizes[n][0], "height": sizes[n][1]}
              for i, n in enumerate(reference)]
    ids = {im["file_name"]: im["id"] for im in images}
    anns = []
    for n, dets in reference.items():
        for d in dets:
            if d.score >= gt_score:
                w, h = d.x2 - d.x1, d.y2 - d.y1
                anns.append({"id": len(anns) + 1, "image_id": ids[n], "category_id": d.label + 1,
                             "bbox": [d.x1, d.y1, w, h], "area": max(w, 0.0) * max(h, 0.0), "iscrowd": 0})
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(class_names)]
    return CocoGT(_quiet_coco({"images": images, "annotations": anns, "categories": cats}), ids,
                  {i: i + 1 for i in range(len(class_names))}, f"agreement (score >= {gt_score})",
                  {i + 1: c for i, c in enumerate(class_names)})


def _norm_name(s: str) -> str:
    return re.sub(r"[\s_]+", " ", s.strip().lower())


def coco_gt_from_file(path: str | Path, images: list[str], class_names: list[str]) -> CocoGT:
    """Real COCO annotations: images matched by file name, categories by name (spaces = underscores)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetricError(f"--labels coco {p}: not a readable COCO JSON ({e.__class__.__name__})") from None
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("images", "annotations", "categories")):
        raise MetricError(f"--labels coco {p}: expected a COCO object with images, annotations and categories lists")
    ids = {im.get("file_name"): im.get("id") for im in d["images"] if isinstance(im, dict)}
    matched = {n: ids[n] for n in images if n in ids}
    if not matched:
        raise MetricError(f"--labels coco {p} annotates none of the images (its file_names are e.g. "
                          f"{next(iter(ids), '?')!r}); point --images at the annotated photos")
    by_name = {_norm_name(c.get("name", "")): c.get("id") for c in d["categories"] if isinstance(c, dict)}
    cat_of = {i: by_name[_norm_name(n)] for i, n in enumerate(class_names) if _norm_name(n) in by_name}
    if not cat_of:
        raise MetricError(f"--labels coco {p}: none of its category names is a class of the bundle (e.g. "
                          f"{class_names[0]!r}); the model and the annotations name different things")
    names = {c["id"]: c.get("name", "") for c in d["categories"] if isinstance(c, dict)}
    return CocoGT(_quiet_coco(d), matched, cat_of, f"annotations {p.name}", names)


def coco_map(gt: CocoGT, results: dict[str, list]) -> dict:
    """COCO bbox mAP of one backend's detections on the images it ran (faster-coco-eval), and the AP
    of each category there."""
    from faster_coco_eval import COCOeval_faster

    names = [n for n in results if n in gt.image_ids]
    dts = [{"image_id": gt.image_ids[n], "category_id": gt.category_of_label[d.label],
            "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "score": d.score}
           for n in names for d in results[n] if d.label in gt.category_of_label]
    if not names:
        return {"images": 0}
    if not dts:  # nothing detected: every AP is 0 where there is ground truth
        return {"images": len(names), **{k: 0.0 for k in COCO_KEYS}, "per_class": {}}
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval_faster(gt.coco, gt.coco.loadRes(dts), "bbox")
        e.params.imgIds = sorted(gt.image_ids[n] for n in names)
        e.evaluate()
        e.accumulate()
        e.summarize()
    stats = [float(v) for v in e.stats[:6]]
    prec = e.eval["precision"][:, :, :, 0, -1]  # IoU x recall x category, area all, 100 detections
    per = {}
    for k, cid in enumerate(e.params.catIds):
        p = prec[:, :, k]
        if (p > -1).any():
            per[gt.names.get(cid, str(cid))] = float(p[p > -1].mean())
    return {"images": len(names), **dict(zip(COCO_KEYS, stats)), "per_class": per}


# -- segmentation ------------------------------------------------------------------
IGNORE_LABEL = 255  # Cityscapes' trainId convention: pixels not scored


def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """[n, n] pixel counts (row: truth, column: prediction); truth pixels >= n (IGNORE_LABEL) are skipped."""
    if truth.shape != pred.shape:
        raise MetricError(f"a label mask is {truth.shape[1]}x{truth.shape[0]} but the prediction is "
                          f"{pred.shape[1]}x{pred.shape[0]}; labels must have the image's size")
    t, p = truth.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64)
    keep = t < n
    return np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)


def iou_metrics(cm: np.ndarray, names: list[str]) -> dict:
    """mIoU over the classes present in the truth or the prediction, pixel accuracy, IoU per class."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    iou = np.where(present, inter / np.maximum(union, 1), 0.0)
    return {"mIoU": float(iou[present].mean()) if present.any() else -1.0,
            "pixel_acc": float(inter.sum() / max(cm.sum(), 1)),
            "per_class": {names[i]: float(iou[i]) for i in range(len(names)) if present[i]}}


def read_label_masks(folder: str | Path, images: list[str], num_classes: int) -> dict[str, np.ndarray]:
    """FOLDER/STEM.png for each image that has one: 8-bit class ids, IGNORE_LABEL not scored."""
    import cv2

    d = Path(folder)
    if not d.is_dir():
        raise MetricError(f"--labels masks {d}: not a directory (expected one 8-bit PNG of class ids per image, "
                          "named as the image with .png)")
    out = {}
    for name in images:
        p = d / (Path(name).stem + ".png")
        if not p.is_file():
            continue
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if m is None or m.ndim != 2 or m.dtype != np.uint8:
            raise MetricError(f"--labels masks: {p} is not a single-channel 8-bit PNG of class ids")
        bad = np.unique(m[(m >= num_classes) & (m != IGNORE_LABEL)])
        if bad.size:
            raise MetricError(f"--labels masks: {p} holds class id {int(bad[0])}; the bundle has {num_classes} classes "
                              f"(0..{num_classes - 1}, {IGNORE_LABEL} = not scored)")
        out[name] = m
    if not out:
        raise MetricError(f"--labels masks {d}: none of the images has a label PNG there (expected e.g. "
                          f"{d / (Path(images[0]).stem + '.png')})")
    return out


def mask_metrics(results: dict[str, list], truth: dict[str, np.ndarray] | None, reference: dict[str, list] | None,
                 names: list[str]) -> dict:
    """Dataset mIoU / pixel accuracy of one backend's masks against label masks and (agreement) against
    the reference backend's masks, each from one confusion matrix summed over the images."""
    n = len(names)
    rec: dict = {"images": len(results)}
    if truth is not None:
        cm = sum((confusion(truth[k], r[0].mask, n) for k, r in results.items() if k in truth), np.zeros((n, n), np.int64))
        rec.update(iou_metrics(cm, names))
        rec["labelled_images"] = sum(1 for k in results if k in truth)
    if reference is not None:
        cm = sum((confusion(reference[k][0].mask, r[0].mask, n) for k, r in results.items()), np.zeros((n, n), np.int64))
        agree = iou_metrics(cm, names)
        rec["agreement_mIoU"], rec["agreement_pixel"] = agree["mIoU"], agree["pixel_acc"]
        rec.setdefault("per_class", agree["per_class"])
    return rec
