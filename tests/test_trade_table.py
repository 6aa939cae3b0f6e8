"""The trade table's writer: one markdown line per model and way with ratios to the fp16 row, the
JSON record, and the chart; measured numbers come from benchmarks/trade_table.py's run."""

from __future__ import annotations

import json

import cv2
import pytest

from litedet.benchmarks.trade_table import TradeRow, format_trade_table, write_trade_table


def _rows():
    return [TradeRow("nanodet_m", "fp32", 950_000, 356_000_000, 3_800_000, 12.0, 122_700_000, {"AP": 1.0, "AP50": 1.0}),
            TradeRow("nanodet_m", "fp16", 950_000, 356_000_000, 1_900_000, 10.0, 83_800_000, {"AP": 0.998, "AP50": 1.0}),
            TradeRow("nanodet_m", "int8-auto", 950_000, 356_000_000, 1_100_000, 11.0, 76_100_000,
                     {"AP": 0.9736, "AP50": 0.99}, "43 of 73 kept fp"),
            TradeRow("squeezenet1_1", "fp16", 1_235_000, 394_000_000, 2_480_000, 9.0, None,
                     {"top1": 0.685, "top5": 0.88})]


def test_the_table_has_one_line_per_way_with_ratios_to_fp16():
    md = format_trade_table(_rows()).splitlines()
    assert len(md) == 2 + 4 and md[0].startswith("| model | way |")
    int8 = md[4]
    assert "| int8-auto |" in int8 and "| 1.10 |" in int8 and "| 76.1 M | 0.91 |" in int8
    assert "AP 0.974 / AP50 0.990" in int8 and "43 of 73 kept fp" in int8
    assert "top-1 0.6850 / top-5 0.8800" in md[5] and "| - | - |" in md[5]  # no ARM count: no ratio
    with pytest.raises(ValueError, match="no rows"):
        format_trade_table([])


def test_write_puts_json_markdown_and_a_chart(tmp_path):
    paths = write_trade_table(_rows(), tmp_path / "t", {"machine": "test"})
    assert sorted(p.name for p in paths) == ["trade_table.json", "trade_table.md", "trade_table.png"]
    doc = json.loads((tmp_path / "t" / "trade_table.json").read_text())
    assert doc["schema"] == "litedet-trade-table/1" and len(doc["rows"]) == 4
    assert doc["rows"][2]["accuracy"]["AP"] == 0.9736
    img = cv2.imread(str(tmp_path / "t" / "trade_table.png"))
    assert img is not None and img.shape[0] > 100 and (img < 250).any()
    assert not list((tmp_path / "t").glob(".*"))  # no temp left behind
