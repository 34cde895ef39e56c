"""The notebook widgets without a browser: the playground re-renders when a control moves, the fit monitor
shows progress, stops on its button and reports errors; the display helpers draw what they say."""

import io
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

import gilab
from gilab import Gaussians2D
from gilab.gaussians import CUTOFF_RADIUS
from gilab.widgets import FitMonitor, GaussianPlayground, ellipse_outlines, image_to_png, show_fit

pytest.importorskip("ipywidgets")


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def small_playground(**kwargs):
    # dense: a handful of Gaussians on a small canvas, no numba compile needed
    return GaussianPlayground(height=40, width=60, zoom=1, backend="dense", **kwargs)


# ------------------------------------------------------------------ helpers
def test_image_to_png_round_trip_and_shrink():
    image = torch.rand(3, 20, 30)
    pixels = decode(image_to_png(image))
    assert pixels.shape == (20, 30, 3)
    assert np.array_equal(pixels, (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    assert decode(image_to_png(image, max_side=15)).shape == (10, 15, 3)
    assert decode(image_to_png(torch.full((3, 4, 4), 2.0)))[0, 0].tolist() == [255, 255, 255]  # clamped


@pytest.mark.parametrize("param", ["rs", "cholesky"])
def test_ellipse_outlines_lie_at_the_cutoff_radius(param):
    g = Gaussians2D.from_scale_rotation(torch.tensor([[10.0, 5.0], [3.0, 4.0]]), torch.tensor([[4.0, 1.5], [2.0, 2.0]]),
                                        torch.tensor([0.7, 0.0]), torch.rand(2, 3))
    if param == "cholesky":
        g = g.to_cholesky()
    points = torch.from_numpy(ellipse_outlines(g, points=33)).float()  # (N, P, 2)
    d = points - g.means[:, None]
    a, b, c = g.conics().unbind(-1)
    r2 = a[:, None] * d[..., 0] ** 2 + 2 * b[:, None] * d[..., 0] * d[..., 1] + c[:, None] * d[..., 1] ** 2
    assert torch.allclose(r2.sqrt(), torch.full_like(r2, CUTOFF_RADIUS), rtol=1e-4)


def test_show_fit_draws_four_panels():
    import matplotlib

    matplotlib.use("Agg")
    image = torch.rand(3, 16, 20)
    result = gilab.fit(image, n=20, iters=3, backend="dense", progress=False)
    fig = show_fit(result, image)
    assert len(fig.axes) == 4 and "20 Gaussians" in fig.axes[1].get_title()
    matplotlib.pyplot.close(fig)


def test_show_fit_gives_a_wide_image_room():
    """A 8:1 panorama was squeezed into a strip (about 60 px high) beside a flattened curve: now each
    picture gets a row at the figure's full width and the curve keeps its height."""
    import matplotlib

    matplotlib.use("Agg")
    image = torch.rand(3, 16, 128)
    result = gilab.fit(image, n=20, iters=3, backend="dense", progress=False)
    fig = show_fit(result, image)
    fig.canvas.draw()
    heights = [ax.get_window_extent().height / fig.dpi for ax in fig.axes]  # inches
    widths = [ax.get_window_extent().width / fig.dpi for ax in fig.axes]
    assert all(w > 10 for w in widths[:3]) and all(h > 1.2 for h in heights[:3]), (widths, heights)
    assert heights[3] > 1.5, heights
    matplotlib.pyplot.close(fig)


# ------------------------------------------------------------------ playground
def test_playground_renders_its_gaussians():
    pg = small_playground(show_ellipses=False)
    assert pg.renders == 1 and "update 1" in pg.status.value
    g = pg.gaussians()
    assert len(g) == 3 and g.param == "rs" and g.size == (40, 60)
    expected = gilab.render(g, 40, 60, backend="dense").clamp(0, 1)
    assert np.array_equal(decode(pg.image.value), (expected * 255).round().byte().permute(1, 2, 0).numpy())
    pg.ellipses.value = True  # the outlines are drawn over the picture
    assert not np.array_equal(decode(pg.image.value), (expected * 255).round().byte().permute(1, 2, 0).numpy())
    assert torch.allclose(pg.render(), gilab.render(g, 40, 60, backend="dense"))
    assert pg._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == pg.widget.model_id


def test_moving_a_slider_re_renders():
    pg = small_playground(show_ellipses=False)
    before = decode(pg.image.value)
    pg.controls[0]["x"].value = 10.0
    assert pg.renders == 2 and "update 2" in pg.status.value
    assert pg.gaussians().means[0, 0].item() == 10.0
    after = decode(pg.image.value)
    assert after.shape == before.shape and not np.array_equal(after, before)
    pg.controls[1]["color"].value = "#000000"
    assert pg.renders == 3 and torch.equal(pg.gaussians().colors[1], torch.zeros(3))


def test_blend_toggle_and_invisible_opacity():
    pg = small_playground(show_ellipses=False)
    summed = pg.render()
    pg.blend.value = "alpha"
    assert "alpha blending" in pg.status.value and not torch.allclose(pg.render(), summed)
    pg.blend.value = "sum"
    # below 1/255 a Gaussian contributes nothing: the picture equals the one without it
    pg.controls[2]["opacity"].value = 0.003
    without = gilab.render(pg.gaussians()[:2], 40, 60, backend="dense")
    assert torch.equal(pg.render(), without)


def test_playground_opacity_reaches_the_hints_value():
    """The hint says "set opacity to 0.003 (below 1/255: it vanishes)": the slider's step must reach it."""
    opacity = small_playground().controls[0]["opacity"]
    assert opacity.step <= 0.001 and abs(round(0.003 / opacity.step) * opacity.step - 0.003) < 1e-12
    assert opacity.readout_format == ".3f"  # and the readout shows it


def test_playground_widgets_carry_css_classes():
    pg = small_playground()
    assert "gilab-playground" in pg.widget._dom_classes
    assert {"gilab-pg-g0-x", "gilab-pg-x"} <= set(pg.controls[0]["x"]._dom_classes)
    assert "gilab-pg-image" in pg.image._dom_classes and "gilab-pg-status" in pg.status._dom_classes
    assert "<table" in pg.info.value and "Cholesky" in pg.info.value


def test_playground_zoom_renders_more_pixels():
    pg = GaussianPlayground(height=20, width=30, zoom=3, backend="dense")
    assert decode(pg.image.value).shape == (60, 90, 3)


# ------------------------------------------------------------------ fit monitor
def tiny_target():
    y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 20), indexing="ij")
    return torch.stack([x, y, 0.5 * (x + y)])


def test_monitor_runs_to_the_end_and_shows_it():
    monitor = FitMonitor(tiny_target(), n=30, iters=40, backend="dense", every=10, min_interval=0)
    assert monitor.status.value.startswith("not started") and monitor.stop_button.disabled
    assert monitor.start() is monitor
    result = monitor.wait(timeout=120)
    assert result.iterations == 40 and not monitor.stopped and not monitor.running
    assert monitor.iterations == result.history.iteration and monitor.psnr == result.history.psnr
    assert monitor.updates >= 2  # during the fit and once at the end
    assert decode(monitor.render_view.value).shape == (16, 20, 3)
    assert decode(monitor.curve_view.value).ndim == 3
    assert monitor.progress.value == 1 and monitor.progress.bar_style == "success"
    assert monitor.status.value.startswith("done:") and monitor.stop_button.disabled


def test_monitor_stop_button_ends_the_fit():
    monitor = FitMonitor(tiny_target(), n=30, iters=100_000, backend="dense", every=5, min_interval=0)
    monitor.start()
    deadline = time.monotonic() + 60
    while not monitor.iterations and time.monotonic() < deadline:  # wait for the first callback
        time.sleep(0.01)
    assert monitor.running and not monitor.stop_button.disabled
    monitor.stop_button.click()
    result = monitor.wait(timeout=60)
    assert monitor.stopped and 5 <= result.iterations < 100_000
    assert monitor.status.value.startswith("stopped:") and monitor.stop_button.disabled
    assert math.isfinite(result.psnr)
    # a stopped fit is not a finished one: the bar stays where it was, in orange, not full and green
    assert monitor.progress.bar_style == "warning" and monitor.progress.value < 1


def wait_for_first_callback(monitor, timeout=60):
    deadline = time.monotonic() + timeout
    while not monitor.iterations and time.monotonic() < deadline:
        time.sleep(0.01)


def test_await_returns_the_result_and_stop_during_the_await_ends_the_fit():
    """``await monitor`` (what the notebooks do) leaves the event loop free: a Stop that arrives while a cell
    awaits (here a task on the same loop, as the kernel dispatches a click) ends the fit at once."""
    import asyncio

    done = FitMonitor(tiny_target(), n=30, iters=20, backend="dense", every=5, min_interval=0).start()
    result = asyncio.run(done.finished())
    assert result is done.result and result.iterations == 20 and done.progress.bar_style == "success"

    monitor = FitMonitor(tiny_target(), n=30, iters=1_000_000, backend="dense", every=5, min_interval=0).start()

    async def cell():
        return await monitor

    async def click_stop():
        while not monitor.iterations:
            await asyncio.sleep(0.01)
        monitor.stop_button.click()

    async def both():
        result, _ = await asyncio.wait_for(asyncio.gather(cell(), click_stop()), timeout=60)
        return result

    result = asyncio.run(both())
    assert monitor.stopped and result is monitor.result and 5 <= result.iterations < 1_000_000


def test_cancelling_the_await_stops_the_fit():
    """The kernel's interrupt button cancels an awaiting cell: the fit must end too, not run on unseen."""
    import asyncio

    monitor = FitMonitor(tiny_target(), n=30, iters=1_000_000, backend="dense", every=5, min_interval=0).start()
    wait_for_first_callback(monitor)

    async def interrupted():
        task = asyncio.ensure_future(monitor.finished())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    monitor.wait(timeout=60)
    assert monitor.stopped and monitor.result.iterations < 1_000_000


def test_monitor_reports_errors_and_checks_its_arguments():
    monitor = FitMonitor(tiny_target(), n=10, iters=5, param="bogus", backend="dense").start()
    with pytest.raises(ValueError, match="param"):
        monitor.wait(timeout=60)
    assert monitor.status.value.startswith("failed") and monitor.progress.bar_style == "danger"
    with pytest.raises(ValueError, match="callback"):
        FitMonitor(tiny_target(), callback=lambda s: None)
    with pytest.raises(RuntimeError, match="start"):
        FitMonitor(tiny_target()).wait()


def test_monitor_with_a_time_budget_fills_the_progress_bar():
    monitor = FitMonitor(tiny_target(), n=10, seconds=0.5, backend="dense", every=1, min_interval=0).start()
    result = monitor.wait(timeout=60)
    assert result.iterations >= 1 and monitor.progress.value == 1


@pytest.mark.slow
def test_stop_is_handled_under_run_all_in_a_real_kernel(tmp_path, monkeypatch):
    """Run All, as JupyterLab does it: every cell's execute request is sent at once, then Stop is clicked (a
    comm message on the shell channel) while the cell ``result = await monitor`` waits. The kernel handles the
    click during the await, the fit stops, and the cells below run. (With ``monitor.wait()`` in that cell the
    click would sit in the queue until the fit ended by itself: a million iterations here.)"""
    import json
    import queue
    import sys

    from jupyter_client.manager import start_new_kernel

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        cells = [("import torch, gilab\n"
                  "y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 20), indexing='ij')\n"
                  "monitor = gilab.widgets.FitMonitor(torch.stack([x, y, x * y]), n=30, iters=1_000_000, "
                  "backend='dense', every=5, min_interval=0)\n"
                  "monitor.start()\n"
                  "print(monitor.stop_button.comm.comm_id)"),
                 "result = await monitor",
                 "print('after', monitor.stopped, result.iterations < 1_000_000)"]
        ids = [kc.execute(code) for code in cells]  # Run All: all three queued before the first has run
        printed, idle = {}, set()

        def pump(until, timeout=120):
            deadline = time.monotonic() + timeout
            while not until() and time.monotonic() < deadline:
                try:
                    msg = kc.get_iopub_msg(timeout=1)
                except queue.Empty:  # nothing yet
                    continue
                parent = msg["parent_header"].get("msg_id")
                if msg["msg_type"] == "stream":
                    printed[parent] = printed.get(parent, "") + msg["content"]["text"]
                elif msg["msg_type"] == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"]))
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle.add(parent)
            assert until(), f"timed out: printed {printed}, idle {idle}"

        pump(lambda: ids[0] in idle)
        comm_id = printed[ids[0]].strip()
        time.sleep(1.0)  # the fit runs; the second cell is awaiting it
        assert ids[1] not in idle
        click = kc.session.msg("comm_msg", {"comm_id": comm_id,
                                            "data": {"method": "custom", "content": {"event": "click"}}})
        kc.shell_channel.send(click)
        start = time.monotonic()
        pump(lambda: ids[2] in idle, timeout=60)
        assert time.monotonic() - start < 30
        assert printed[ids[2]].strip() == "after True True", printed
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
