"""benchmarks/codec_time_saving.py: the net start's encoding-time saving read off a ladder of budgets."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


def record(image, net, rand, rate=0.3):
    """A codec.py record: net and random (budget, encode seconds, PSNR) runs at one rate."""
    rows = [{"codec": "gilab", "init": init, "budget_s": b, "target_bpp": rate, "encode_s": s, "psnr": p}
            for init, runs in (("net", net), ("random", rand)) for b, s, p in runs]
    rows.append({"codec": "JPEG", "psnr": 30.0})  # other codecs' rows are ignored
    return {"image": image, "net_start": "zoom", "rows": rows}


def test_time_to_reach_interpolates_in_log_time_and_marks_bounds():
    bench = load_benchmark("codec_time_saving")
    points = [(1.0, 20.0), (4.0, 24.0)]
    assert bench.time_to_reach(points, 22.0) == (pytest.approx(2.0), "exact")  # halfway in log time: sqrt(1 * 4)
    assert bench.time_to_reach(points, 19.0) == (1.0, "at_most")
    assert bench.time_to_reach(points, 25.0) == (4.0, "never")


def test_savings_and_summary_count_what_is_known():
    bench = load_benchmark("codec_time_saving")
    ladder = (1.0, 2.0, 4.0)
    net = [(b, b, p) for b, p in zip(ladder, (22.0, 23.0, 24.0))]
    records = [record("a", net, [(b, b, p) for b, p in zip(ladder, (15.0, 22.0, 25.0))]),
               record("b", net, [(b, b, p) for b, p in zip(ladder, (10.0, 16.0, 23.0))])]
    rows = bench.savings(records)
    by = {(r["image"], r["random_budget_s"]): r for r in rows}
    assert by["a", 1.0]["saving_is"] == "at_least" and by["a", 1.0]["saving"] == 1.0
    assert by["a", 2.0]["saving"] == 2.0 and by["a", 2.0]["saving_is"] == "at_least"  # net's 1 s is 22 dB
    assert by["a", 4.0]["saving_is"] == "at_most"  # 25 dB: the net start never gets there
    assert by["b", 4.0]["saving"] == pytest.approx(2.0) and by["b", 4.0]["saving_is"] == "equal"
    summary = {s["random_budget_s"]: s for s in bench.summarise(rows)}
    assert summary[4.0]["net_never_reached"] == 1 and summary[4.0]["images_saving_below_5x"] == 2
    assert summary[1.0]["net_first_point_already_above"] == 2 and summary[1.0]["images_saving_below_5x"] == 0


def test_runs_without_a_ladder_are_refused_in_one_line(tmp_path, capsys):
    bench = load_benchmark("codec_time_saving")
    assert bench.main(["--cache", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    (tmp_path / "runs").mkdir()
    two = record("a", [(2.5, 2.5, 22.0), (12.5, 12.5, 24.0)], [(2.5, 2.5, 15.0), (12.5, 12.5, 24.0)])
    (tmp_path / "runs" / "a.json").write_text(json.dumps(two))
    assert bench.main(["--cache", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "ladder" in err[1]
