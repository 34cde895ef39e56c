"""benchmarks/colour_steps.py: more ISRA steps against fine-tuning as long, end to end on tiny images."""

from __future__ import annotations

import json

import numpy as np
from conftest import load_benchmark, synthetic_image


def test_steps_against_fine_tuning_end_to_end(tmp_path, monkeypatch):
    from PIL import Image

    bench = load_benchmark("colour_steps")
    val = tmp_path / "data" / "train" / "bsds500" / "val"
    kodak = tmp_path / "data" / "kodak"
    for folder in (val, kodak):
        folder.mkdir(parents=True)
    for i, folder in enumerate([val, val, val, kodak]):
        array = (synthetic_image(48, 64).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(np.roll(array, 7 * i, axis=1)).save(folder / f"{i}.png" if folder == kodak
                                                            else folder / f"{i}.jpg")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path / "data"))
    out = tmp_path / "steps.json"
    assert bench.main(["--steps", "3", "--val-skip", "1", "--val-count", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["image"] for r in result["bsds_val"]["per_image"]] == ["1.jpg", "2.jpg"]
    row = result["kodak"]["per_image"][0]
    assert len(row["psnr_steps"]) == 4 and row["seconds_steps"][0] == 0 < row["seconds_steps"][1]
    assert row["seconds_steps"][1] < row["seconds_steps"][2]
    assert [f["steps"] for f in row["fine_tune"]] == [1, 2, 3]
    assert all(f["iterations"] >= 0 and np.isfinite(f["psnr"]) for f in row["fine_tune"])
    assert row["fine_tune"][0]["psnr"] >= row["psnr_steps"][0]  # fine-tuning never reports below its start
    summary = result["bsds_val"]["summary"]
    assert summary["fine_tune"][0]["images_steps_ahead"] in (0, 1, 2)
    assert bench.main(["--steps", "0", "--out", str(out)]) == 2
    assert bench.main(["--val-count", "5", "--out", str(out)]) == 2
