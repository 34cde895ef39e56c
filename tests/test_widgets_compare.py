"""The start comparison widget without a browser: the three runs finish with curves and records in the study's
format, the net beats random at the budget, Stop ends the runs, uploads are decoded (a bad file gets one line)."""

import datetime
import io
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gilab
from gilab.errors import ImageError
from gilab.study import INITS, psnr_at

pytest.importorskip("ipywidgets")

from gilab.widgets import StartComparison
from gilab.widgets.compare import decode_upload, resize, speedup_line


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def tiny_image():
    return F.interpolate(gilab.io.default_image()[None], size=(48, 40), mode="area")[0]


def uploaded(name: str, content: bytes):
    return ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def png_bytes(height=20, width=30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def comparison(**kwargs):
    return StartComparison(tiny_image(), name="tiny", downscale=1, min_interval=0, curve_interval=0.05, **kwargs)


def test_three_runs_finish_with_curves_and_net_beats_random():
    cmp = comparison(budget=0.4)
    assert cmp.image_choice.value == "tiny" and cmp.stop_button.disabled
    assert cmp.start() is cmp
    assert cmp.running and cmp.run_button.disabled and not cmp.stop_button.disabled
    runs = cmp.wait(timeout=120)
    assert not cmp.running and not cmp.stopped and cmp.runs_done == 3
    assert list(runs) == list(INITS) and cmp.budget == pytest.approx(0.4)
    n = runs["net"]["n"]
    assert n == cmp.n and runs["random"]["n"] == n and abs(runs["quadtree"]["n"] - n) <= 0.05 * n
    for kind, run in runs.items():
        assert len(run["seconds"]) > 5 and len(run["psnr"]) == len(run["seconds"]), kind
        # the last logged iteration ends just before the budget runs out (the clock is read again after it)
        assert run["seconds"][0] >= run["init_seconds"] and run["seconds"][-1] > 0.3, kind
        assert [s["budget"] for s in run["snapshots"]][-1] == pytest.approx(0.4)
        assert all(s["seconds"] <= s["budget"] for s in run["snapshots"])
        assert set(cmp.gaussians) == set(INITS) and len(cmp.gaussians[kind]) == run["n"]
    # the slower starts run 4 x the budget, so that their catching up is measured (a number), not bounded
    assert runs["random"]["seconds"][-1] > 1.5 and runs["quadtree"]["seconds"][-1] > 1.5
    assert runs["net"]["seconds"][-1] < 0.6
    at = {kind: psnr_at(run, 0.4) for kind, run in runs.items()}
    assert at["net"] > at["random"] + 3, at
    assert runs["net"]["init_psnr"] > runs["random"]["init_psnr"]
    # what the reader sees: the three renders, the curves, a full progress bar and the speed-up line
    for kind in INITS:
        assert decode(cmp.render_views[kind].value).shape == (48, 40, 3)
        assert "dB" in cmp.captions[kind].value
    assert decode(cmp.curve_view.value).ndim == 3 and cmp.updates >= 6
    assert cmp.progress.value == 1 and cmp.progress.bar_style == "success"
    assert "Speed-up of net" in cmp.summary and "over random" in cmp.summary and "\n" not in cmp.summary
    assert cmp.summary in cmp.result_line.value and cmp.status.value.startswith("done")
    assert not cmp.run_button.disabled and cmp.stop_button.disabled and cmp.message.value == ""


def test_stop_ends_the_runs_early():
    cmp = comparison(budget=60, starts=("net", "random"))
    cmp.start()
    deadline = time.monotonic() + 60
    while cmp._live is None and time.monotonic() < deadline:  # wait until the first fit reports
        time.sleep(0.01)
    assert cmp.running
    cmp.stop_button.click()
    start = time.monotonic()
    cmp.wait(timeout=60)
    assert time.monotonic() - start < 30 and cmp.stopped and cmp.runs_done == 0 and cmp.runs == {}
    assert cmp.summary.startswith("stopped") and cmp.progress.bar_style == "warning"
    assert not cmp.run_button.disabled
    # the captions say what happened: the net run stopped (no record), the random one never started
    assert "stopped at" in cmp.captions["net"].value and "no record" in cmp.captions["net"].value
    assert "not run" in cmp.captions["random"].value
    assert not any("waiting" in c.value for c in cmp.captions.values())
    assert all(len(v.value) > 0 for v in cmp.render_views.values())  # pictures, never an empty (broken) one


def test_budget_slider_offers_round_numbers_and_room():
    """A log slider gave 1.99526 s for 2 and was squeezed to 30 px: now round values and a fixed width."""
    cmp = comparison(budget=2.0)
    values = [value for _, value in cmp.budget_slider.options]
    assert cmp.budget_slider.value == 2.0 and {0.5, 1.0, 2.0, 5.0, 10.0} <= set(values)
    assert all(f"{v:g}" in label for label, v in cmp.budget_slider.options)  # the readout is the value
    assert all(len(f"{v:g}") <= 4 for v in values)
    assert cmp.budget_slider.layout.width == "320px" and cmp.budget_slider.layout.flex == "0 0 auto"
    assert comparison(budget=0.35).budget_slider.value == 0.35  # a budget passed in is offered as it is


def test_starts_not_run_show_a_placeholder_not_a_broken_image():
    cmp = comparison(budget=0.2, starts=("net",))
    for kind in INITS:  # before any run: a grey picture of the target's shape
        picture = decode(cmp.render_views[kind].value)
        assert picture.std() < 2 and picture.mean() > 200 and abs(picture.shape[0] / picture.shape[1] - 48 / 40) < 0.1
    cmp.start()
    cmp.wait(timeout=120)
    assert cmp.runs_done == 1 and decode(cmp.render_views["net"].value).std() > 5
    for kind in ("quadtree", "random"):
        assert decode(cmp.render_views[kind].value).std() < 2 and "not run" in cmp.captions[kind].value


def test_bad_upload_gives_one_line_and_no_exception():
    cmp = comparison()
    before = (cmp.image_choice.options, cmp.image_choice.value, cmp.target_view.value)
    cmp.upload.value = uploaded("bad.png", b"these bytes are not a picture")
    line = cmp.message.value
    assert "bad.png" in line and "not an image" in line and "\n" not in line and "/tmp" not in line
    assert (cmp.image_choice.options, cmp.image_choice.value, cmp.target_view.value) == before
    cmp.upload.value = uploaded("empty.png", b"")
    assert "empty.png" in cmp.message.value and "empty" in cmp.message.value.split(":", 1)[1]


def test_good_upload_becomes_the_picture():
    cmp = comparison()
    before = cmp.target_view.value
    cmp.upload.value = uploaded("mine.png", png_bytes())
    assert cmp.image_choice.value == "upload: mine.png" and "tiny" in cmp.image_choice.options
    assert cmp.current_image().shape == (3, 20, 30) and cmp.target_view.value != before
    assert decode(cmp.target_view.value).shape == (20, 30, 3) and "30x20 px" in cmp.message.value
    cmp.downscale.value = 2
    assert cmp.current_image().shape == (3, 10, 15) and decode(cmp.target_view.value).shape == (10, 15, 3)


def test_picking_another_picture_shows_it():
    cmp = comparison()
    before = cmp.target_view.value
    cmp.image_choice.value = "Grace Hopper"
    cmp.downscale.value = 8
    assert cmp.current_image().shape == (3, 75, 64) and cmp.target_view.value != before


def test_the_image_passed_in_keeps_its_label():
    cmp = StartComparison(tiny_image(), name="Grace Hopper", downscale=1)
    assert cmp.image_choice.options.count("Grace Hopper") == 1 and cmp.current_image().shape == (3, 48, 40)


def test_nothing_ticked_is_one_line_not_a_run():
    cmp = comparison()
    for box in cmp.start_boxes.values():
        box.value = False
    cmp.run_button.click()
    assert "at least one start" in cmp.message.value and not cmp.running
    with pytest.raises(RuntimeError, match="start"):
        cmp.wait()
    with pytest.raises(ValueError, match="start"):
        StartComparison(starts=("net", "bogus"))


def test_widgets_carry_css_classes_and_display():
    cmp = comparison()
    assert "gilab-start-comparison" in cmp.widget._dom_classes
    assert "gilab-cmp-run" in cmp.run_button._dom_classes and "gilab-cmp-upload" in cmp.upload._dom_classes
    assert all(f"gilab-cmp-render-{k}" in cmp.render_views[k]._dom_classes for k in INITS)
    assert cmp._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == cmp.widget.model_id


def test_decode_upload_and_resize():
    image = decode_upload("../x.png", png_bytes(12, 8))
    assert image.shape == (3, 12, 8) and image.dtype == torch.float32
    with pytest.raises(ImageError, match=r"^x\.jpg: "):
        decode_upload("x.jpg", b"\xff\xd8\xff\xe0 truncated")
    big = torch.rand(3, 40, 100)
    assert resize(big, 2).shape == (3, 20, 50) and resize(big, 1, max_side=50).shape == (3, 20, 50)
    assert resize(big, 1) is big


def test_speedup_line_reads_the_study_records():
    def run(kind, seconds, psnr):
        return {"init": kind, "n": 10, "seconds": seconds, "psnr": psnr,
                "snapshots": [{"budget": b, "psnr": psnr_at({"seconds": seconds, "psnr": psnr}, b)} for b in (1, 4)]}

    runs = {"net": run("net", [0.5, 1, 4], [20, 30, 35]),
            "random": run("random", [0.1, 2, 5, 8], [5, 15, 30, 33])}
    line = speedup_line(runs, 4)
    assert "b = 1 / 4 s" in line and "over random (GaussianImage) 5.0x / > 2.0x" in line, line
    assert "35.00 dB at 4 s" in line
    assert "needs the net" in speedup_line({"random": runs["random"]})
    # a net whose start alone took longer than the budget has no snapshot: say so, not a line with holes
    late = dict(run("net", [0.7, 1, 4], [20, 30, 35]), snapshots=[], init_seconds=0.7)
    line = speedup_line({"net": late, "random": runs["random"]}, 0.5)
    assert "no PSNR within 0.5 s" in line and "0.70 s" in line and "over random" not in line, line
