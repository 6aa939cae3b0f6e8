"""Small charts drawn with OpenCV only (no plotting library needed): results
people would rather look at than read."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ["log_bar_chart", "scatter_chart"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_COLORS = [(200, 120, 40), (40, 140, 230), (60, 170, 60), (180, 60, 180)]


def _text(img, s, org, scale=0.42, color=(30, 30, 30)):
    cv2.putText(img, s, org, _FONT, scale, color, 1, cv2.LINE_AA)


def log_bar_chart(path: str | Path, title: str, labels: list[str], series: dict[str, list[float]],
                  floor: float = 1e-8, limit: float | None = None, limit_label: str = "limit") -> None:
    """Horizontal bars on a log10 axis, one group per label, one bar per series;
    an optional dashed ``limit`` line (a pass/fail threshold)."""
    rows = len(labels) * (len(series) + 1)
    h, w, left, right, top = 60 + rows * 14, 760, 190, 30, 40
    img = np.full((h + 30, w, 3), 255, np.uint8)
    _text(img, title, (10, 22), 0.5)
    vals = [max(v, floor) for vs in series.values() for v in vs] + ([limit] if limit else [])
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    hi = max(hi, lo + 1)
    x_of = lambda v: int(left + (math.log10(max(v, floor)) - lo) / (hi - lo) * (w - left - right))  # noqa: E731
    for e in range(lo, hi + 1):
        x = x_of(10.0 ** e)
        cv2.line(img, (x, top), (x, h), (225, 225, 225), 1)
        _text(img, f"1e{e}", (x - 12, h + 18), 0.38)
    y = top + 4
    for i, lab in enumerate(labels):
        _text(img, lab, (8, y + 10 + 7 * (len(series) - 1)))
        for j, (name, vs) in enumerate(series.items()):
            cv2.rectangle(img, (left, y), (x_of(vs[i]), y + 10), _COLORS[j % len(_COLORS)], -1)
            y += 14
        y += 14
    if limit:
        x = x_of(limit)
        for yy in range(top, h, 8):
            cv2.line(img, (x, yy), (x, yy + 4), (0, 0, 200), 1)
        _text(img, f"{limit_label} {limit:g}", (x + 3, top - 4), 0.38, (0, 0, 200))
    for j, name in enumerate(series):
        cv2.rectangle(img, (w - 170, 8 + 14 * j), (w - 160, 18 + 14 * j), _COLORS[j % len(_COLORS)], -1)
        _text(img, name, (w - 154, 17 + 14 * j), 0.38)
    cv2.imwrite(str(path), img)


def scatter_chart(path: str | Path, title: str, x_label: str, y_label: str,
                  points: dict[str, list[tuple[float, float, str]]]) -> None:
    """Labelled points per series (filled markers for the first series, hollow for the others)."""
    w, h, left, bottom, top, right = 760, 520, 70, 50, 40, 30
    img = np.full((h, w, 3), 255, np.uint8)
    _text(img, title, (10, 22), 0.5)
    xs = [p[0] for ps in points.values() for p in ps]
    ys = [p[1] for ps in points.values() for p in ps]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = 0.0, max(ys) * 1.15
    px = lambda x: int(left + (x - x0) / (x1 - x0) * (w - left - right))  # noqa: E731
    py = lambda y: int(h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top))  # noqa: E731
    cv2.line(img, (left, h - bottom), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, h - bottom), (0, 0, 0), 1)
    for k in range(6):
        xv, yv = x0 + (x1 - x0) * k / 5, y0 + (y1 - y0) * k / 5
        _text(img, f"{xv:.0f}", (px(xv) - 10, h - bottom + 16), 0.38)
        _text(img, f"{yv:.1f}", (left - 40, py(yv) + 4), 0.38)
    _text(img, x_label, (w // 2 - 60, h - 12))
    _text(img, y_label, (8, top - 8))
    for j, (name, ps) in enumerate(points.items()):
        c = _COLORS[j % len(_COLORS)]
        for x, y, lab in ps:
            cv2.circle(img, (px(x), py(y)), 5, c, -1 if j == 0 else 2, cv2.LINE_AA)
            if j == 0:
                _text(img, lab, (px(x) + 7, py(y) - 6), 0.36)
        cv2.circle(img, (w - 160, 14 + 16 * j), 5, c, -1 if j == 0 else 2, cv2.LINE_AA)
        _text(img, name, (w - 150, 18 + 16 * j), 0.4)
    cv2.imwrite(str(path), img)
