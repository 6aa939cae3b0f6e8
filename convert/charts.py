"""Small charts drawn with OpenCV only (no plotting library needed): results
people would rather look at than read."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from litedet.runtime.visualize import drawable, save_image

__all__ = ["log_bar_chart", "scatter_chart", "log_scatter_chart", "metric_bar_chart"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_COLORS = [(200, 120, 40), (40, 140, 230), (60, 170, 60), (180, 60, 180), (30, 30, 200), (120, 120, 120)]


def _text(img, s, org, scale=0.42, color=(30, 30, 30)):
    cv2.putText(img, drawable(s), org, _FONT, scale, color, 1, cv2.LINE_AA)


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
    save_image(path, img)


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
    save_image(path, img)


def log_scatter_chart(path: str | Path, title: str, x_label: str, y_label: str,
                      points: dict[str, list[tuple[float, float, str]]], hollow: set[str] | frozenset = frozenset()) -> None:
    """Labelled points per series on log10 x and y axes; series named in ``hollow`` get hollow markers."""
    w, h, left, bottom, top, right = 1200, 760, 80, 50, 40, 170  # right: room for the last labels
    img = np.full((h, w, 3), 255, np.uint8)
    _text(img, title, (10, 22), 0.5)
    xs = [p[0] for ps in points.values() for p in ps if p[0] > 0]
    ys = [p[1] for ps in points.values() for p in ps if p[1] > 0]
    if not xs or not ys:
        raise ValueError("log_scatter_chart: no positive points to plot")
    xlo, xhi = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    ylo, yhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    xhi, yhi = max(xhi, xlo + 1), max(yhi, ylo + 1)
    px = lambda x: int(left + (math.log10(x) - xlo) / (xhi - xlo) * (w - left - right))  # noqa: E731
    py = lambda y: int(h - bottom - (math.log10(y) - ylo) / (yhi - ylo) * (h - bottom - top))  # noqa: E731
    for e in range(xlo, xhi + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if 10.0 ** xlo <= v <= 10.0 ** xhi:
                cv2.line(img, (px(v), top), (px(v), h - bottom), (215, 215, 215) if m == 1 else (240, 240, 240), 1)
                if m == 1 or xhi - xlo <= 2:
                    _text(img, f"{m}e{e}", (px(v) - 12, h - bottom + 16), 0.38)
    for e in range(ylo, yhi + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if 10.0 ** ylo <= v <= 10.0 ** yhi:
                cv2.line(img, (left, py(v)), (w - right, py(v)), (215, 215, 215) if m == 1 else (240, 240, 240), 1)
                _text(img, f"{v:g}", (left - 50, py(v) + 4), 0.36)
    cv2.line(img, (left, h - bottom), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, h - bottom), (0, 0, 0), 1)
    _text(img, x_label + " (log)", (w // 2 - 40, h - 12))
    _text(img, y_label + " (log)", (8, top - 8))
    for j, (name, ps) in enumerate(points.items()):
        c = _COLORS[j % len(_COLORS)]
        fill = -1 if name not in hollow else 2
        for x, y, lab in ps:
            if x <= 0 or y <= 0:
                continue
            cv2.circle(img, (px(x), py(y)), 5, c, fill, cv2.LINE_AA)
            _text(img, lab, (px(x) + 7, py(y) - 6), 0.33, c)
        cv2.circle(img, (left + 20, top + 14 + 16 * j), 5, c, fill, cv2.LINE_AA)
        _text(img, name, (left + 30, top + 18 + 16 * j), 0.4)
    save_image(path, img)


def metric_bar_chart(path: str | Path, title: str, values: dict[str, float], notes: list[str] = ()) -> None:
    """One horizontal bar per name on a 0..1 axis with its value written, and lines of text below
    (e.g. the classes a backend loses most)."""
    left, w, top, bar = 130, 760, 40, 22
    h = top + len(values) * (bar + 10) + 30 + 16 * len(notes)
    img = np.full((h, w, 3), 255, np.uint8)
    _text(img, title[:110], (10, 22), 0.5)
    scale = w - left - 80
    for i in range(11):
        x = left + int(scale * i / 10)
        cv2.line(img, (x, top), (x, top + len(values) * (bar + 10)), (230, 230, 230), 1)
    y = top
    for j, (name, v) in enumerate(values.items()):
        _text(img, name, (8, y + 15))
        cv2.rectangle(img, (left, y), (left + int(scale * min(max(v, 0.0), 1.0)), y + bar), _COLORS[j % len(_COLORS)], -1)
        _text(img, f"{v:.4f}", (left + int(scale * min(max(v, 0.0), 1.0)) + 6, y + 15))
        y += bar + 10
    y += 20
    for line in notes:
        _text(img, line[:120], (8, y), 0.38)
        y += 16
    save_image(path, img)
