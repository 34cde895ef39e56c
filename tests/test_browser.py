"""A real browser: JupyterLab in headless Chromium runs the notebooks' widgets as a reader would.

What it does: starts JupyterLab on 127.0.0.1 (a free port, a random token, every Jupyter folder in a temporary
directory, a ``python3`` kernelspec for this interpreter), opens notebooks through Playwright with Debian's
Chromium (never a downloaded browser), runs all cells (in fast mode), checks that no cell raised or wrote to
stderr and no widget failed to display, and then uses each widget:

- the **playground** (``01_rasterizer``): a slider moved with the keyboard changes the picture;
- the **fit monitor**, under *Run All* with ``result = await monitor`` in the next cell: the picture changes
  while that cell waits, Stop ends the fit at once, the cells below run, and the bar is not a finished one;
- the **placement explorer** on a 1366 x 768 screen: picture, controls and status line on one screen, no
  label cut, and a target count typed in lands;
- the **start comparison**: Run (numbers in the result line), then Run and Stop (no "waiting", no broken
  picture).

It saves screenshots for the README (``figures/playground.png``, ``fit_monitor.png``, ``placement_explorer.png``,
``start_comparison.png``) when a file is missing or when ``GILAB_UPDATE_FIGURES=1`` (so that ``make test``
leaves the checkout clean).

Needs ``playwright`` (the Python package) and ``/usr/bin/chromium`` (``apt-get install chromium``). Without them
the tests are skipped, except when ``CI`` is set: there a missing browser is a failure, so it cannot hide.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_rasterizer.ipynb"
FIGURES = ROOT / "figures"
FIGURE = FIGURES / "playground.png"
CHROMIUM = os.environ.get("GILAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def skip_or_fail(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sync_api():
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"{CHROMIUM} not found (apt-get install chromium)")
    return sync_api


@pytest.fixture(scope="module")
def lab(sync_api, tmp_path_factory):
    """A JupyterLab server in a temporary home; yields (base URL, token, root folder)."""
    tmp = tmp_path_factory.mktemp("lab")
    root, data = tmp / "root", tmp / "data"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # running it must not touch the committed file
    settings = tmp / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # The kernel must be this interpreter (the venv's): a kernelspec under the temp prefix, first on JUPYTER_PATH.
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp / "prefix"),
                    "--name", "python3"], check=True, capture_output=True)
    env = {**os.environ,
           "JUPYTER_PATH": str(tmp / "prefix" / "share" / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_DATA_DIR": str(data), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "GILAB_FAST": "1"}
    env.pop("MPLBACKEND", None)
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - open for the server's whole life
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp / "server.log").read_text()[-3000:])
            time.sleep(0.3)
        yield base, token, root
    finally:
        try:  # also shuts the kernel down
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            server.wait(timeout=20)
        except Exception:  # noqa: BLE001 - fall back to terminating our own child
            server.terminate()
            server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def chromium(sync_api):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(locator):
    from PIL import Image

    return Image.open(io.BytesIO(locator.screenshot())).convert("RGB")


def open_notebook(page, base: str, token: str, name: str, viewport=None):
    """Open notebook ``name`` in JupyterLab and wait until its kernel is ready."""
    # reset: start from an empty workspace, not with the notebooks an earlier test left open
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_function("""name => { const w = window.jupyterapp && jupyterapp.shell.currentWidget;
                                        return w && w.sessionContext && w.context && w.context.path === name; }""",
                           arg=name, timeout=90_000)
    # the toolbar says idle before a kernel exists: wait on the session itself
    page.evaluate("async () => { await jupyterapp.shell.currentWidget.sessionContext.ready; }")


ALL_RAN = """() => {
    const panel = jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return kernel && kernel.status === 'idle' && cells.length > 0
        && cells.every(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*'));
}"""


def run_all_cells(page, base: str, token: str, name: str, wait: bool = True):
    """Open notebook ``name``, wait for its kernel, run all cells and (``wait``) wait until all have run."""
    open_notebook(page, base, token, name)
    # not awaited: the command's promise settles only when every cell has run (never, while one awaits a fit)
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
    if wait:  # done when every code cell has an execution count, none is queued or running ([*]) and idle
        page.wait_for_function(ALL_RAN, timeout=240_000, polling=500)


def write_notebook(root: Path, name: str, cells: list[str]):
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, root / name)


def save_figure(locator, name: str):
    """The README's pictures: written when missing or asked for, so that a test run leaves the checkout clean."""
    path = FIGURES / name
    if not path.exists() or os.environ.get("GILAB_UPDATE_FIGURES") == "1":
        FIGURES.mkdir(exist_ok=True)
        locator.screenshot(path=str(path))


def cell_running(page, index: int) -> bool:
    """Whether code cell ``index`` shows [*] (queued or running)."""
    return page.evaluate("""i => { const cells = jupyterapp.shell.currentWidget.content.widgets
                                        .filter(c => c.model.type === 'code');
                               return cells[i].promptNode.textContent.includes('*'); }""", index)


def assert_clean(page):
    """No cell raised or wrote to stderr (errors render as stderr too), and every widget displayed."""
    stderr = page.locator('.jp-Cell-outputArea [data-mime-type="application/vnd.jupyter.stderr"]')
    assert stderr.count() == 0, "a cell raised or wrote to stderr:\n" + "\n".join(stderr.all_inner_texts())
    assert page.get_by_text("Error displaying widget").count() == 0


def wait_loaded(page, image):
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())


def wait_settled(page, label, quiet_ms: int = 600, timeout_s: float = 30):
    """Wait until ``label``'s text stops changing for ``quiet_ms`` (the kernel has caught up with the keys)."""
    deadline = time.monotonic() + timeout_s
    text = label.inner_text()
    while time.monotonic() < deadline:
        page.wait_for_timeout(quiet_ms)
        now = label.inner_text()
        if now == text:
            return text
        text = now
    raise AssertionError(f"{label} kept changing for {timeout_s} s")


def test_rasterizer_notebook_runs_and_playground_responds(chromium, lab):
    import numpy as np

    base, token, _ = lab
    start = time.perf_counter()
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        run_all_cells(page, base, token, NOTEBOOK.name)
        ran = time.perf_counter() - start
        assert_clean(page)
        playground = page.locator(".gilab-playground")
        playground.wait_for(state="visible", timeout=30_000)
        playground.scroll_into_view_if_needed()
        picture = playground.locator(".gilab-pg-image")
        status = playground.locator(".gilab-pg-status")
        wait_loaded(page, picture)
        before_status = status.inner_text()
        assert "update" in before_status, before_status
        before = screenshot(picture)

        readout = playground.locator(".gilab-pg-g0-x .widget-readout")
        x_before = float(readout.inner_text().replace("\u2212", "-"))  # readouts write minus as U+2212
        handle = playground.locator(".gilab-pg-g0-x .noUi-handle")
        handle.focus()
        for _ in range(30):  # 30 steps of 0.5 px on the canvas: 30 screen pixels at zoom 2
            handle.press("ArrowRight")
        # the kernel sets the status last, after the new picture; wait for it, then for the browser to load it
        page.wait_for_function("([el, old]) => el.textContent !== old && el.textContent.includes('update')",
                               arg=[status.element_handle(), before_status], timeout=30_000)
        wait_settled(page, status)
        wait_loaded(page, picture)
        after = screenshot(picture)
        x_after = float(readout.inner_text().replace("\u2212", "-"))
        assert x_after > x_before, (x_before, x_after)
        assert before.size == after.size
        change = np.abs(np.asarray(before, dtype=np.int16) - np.asarray(after, dtype=np.int16))
        assert change.max() > 50 and (change.max(axis=-1) > 30).mean() > 0.01, "the picture did not change"
        assert_clean(page)
        save_figure(playground, FIGURE.name)
    finally:
        page.close()
    print(f"browser test: 01_rasterizer ran in {ran:.1f} s, {time.perf_counter() - start:.1f} s in all")


def elapsed(start: float, what: str):
    print(f"browser test: {what} in {time.perf_counter() - start:.1f} s")


MONITOR_CELLS = [
    "import torch\nimport gilab",
    ("y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing='ij')\n"
     "target = torch.stack([x, y, (x * y) ** 0.5])\n"
     "monitor = gilab.widgets.FitMonitor(target, n=200, iters=1_000_000, every=5, min_interval=0.2)\n"
     "monitor.start()"),
    "result = await monitor  # waits for the end, but the kernel still handles Stop",
    "print(f'after the monitor: {result.iterations} iterations, stopped {monitor.stopped}')",
]


def test_fit_monitor_stops_under_run_all(chromium, lab):
    """Run All with ``result = await monitor`` after the start: while that cell waits, the render keeps
    changing and the Stop button (a message the kernel handles during the await) ends the fit; then the cell
    below runs. A million iterations: without a working Stop the test would time out."""
    base, token, root = lab
    start = time.perf_counter()
    write_notebook(root, "monitor.ipynb", MONITOR_CELLS)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        run_all_cells(page, base, token, "monitor.ipynb", wait=False)
        monitor = page.locator(".gilab-fit-monitor")
        monitor.wait_for(state="visible", timeout=90_000)
        status = monitor.locator(".gilab-fit-status")
        render = monitor.locator(".gilab-fit-render img, img.gilab-fit-render").first
        page.wait_for_function("el => el.textContent.startsWith('iteration')", arg=status.element_handle(),
                               timeout=60_000)
        first = status.inner_text()
        first_src = render.get_attribute("src")
        page.wait_for_function("([el, old]) => el.textContent !== old && el.textContent.startsWith('iteration')",
                               arg=[status.element_handle(), first], timeout=30_000)
        # (a message with a picture is applied asynchronously, possibly after a later label update)
        page.wait_for_function("([el, old]) => el.getAttribute('src') !== old",
                               arg=[render.element_handle(), first_src], timeout=30_000)  # the render updates
        assert cell_running(page, 2) and cell_running(page, 3)  # the await cell waits, the last is queued
        stop = monitor.locator(".gilab-fit-stop")
        assert stop.is_enabled()
        stop.click()
        page.wait_for_function("el => el.textContent.startsWith('stopped:')", arg=status.element_handle(),
                               timeout=30_000)
        page.wait_for_function(ALL_RAN, timeout=60_000, polling=300)  # the cells after the await ran
        assert stop.is_disabled()
        outputs = page.locator(".jp-Cell-outputArea")
        assert outputs.get_by_text("after the monitor:").count() == 1
        assert outputs.get_by_text("stopped True").count() == 1
        bar = monitor.locator(".gilab-fit-progress .progress-bar")
        classes = bar.get_attribute("class")
        assert "progress-bar-warning" in classes and "success" not in classes, classes  # not a finished run
        assert_clean(page)
        save_figure(monitor, "fit_monitor.png")
    finally:
        page.close()
    elapsed(start, "fit monitor")


EXPLORER_CELLS = [
    "import torch, torch.nn.functional as F\nimport gilab\nfrom gilab import placement",
    # notebook 03's picture in normal mode (300 x 256) and its edge map: the size the layout must fit
    ("image = F.interpolate(gilab.io.default_image()[None], size=(300, 256), mode='area')[0]\n"
     "gy, gx = torch.gradient(image.mean(0))\n"
     "edges = placement.gaussian_blur(torch.hypot(gx, gy)[None], sigma=1.0)[0]\n"
     "edge_ppm = (0.05 + edges / edges.quantile(0.98)).clamp(0, 1)\n"
     "explorer = gilab.widgets.PlacementExplorer(image, edge_ppm, layers=('points',))\n"
     "explorer"),
]


def test_placement_explorer_fits_a_laptop_screen_and_hits_a_count(chromium, lab):
    base, token, root = lab
    start = time.perf_counter()
    write_notebook(root, "explorer.ipynb", EXPLORER_CELLS)
    page = chromium.new_page(viewport={"width": 1366, "height": 768})
    try:
        run_all_cells(page, base, token, "explorer.ipynb")
        assert_clean(page)
        explorer = page.locator(".gilab-placement-explorer")
        explorer.wait_for(state="visible", timeout=30_000)
        explorer.scroll_into_view_if_needed()
        picture = explorer.locator(".gilab-pe-image").first
        wait_loaded(page, picture)
        # the picture is shown at its own size (it was stretched to 1064 x 1247), and it, the controls and
        # the status line fit on one 768 px screen
        size = page.evaluate("el => [el.naturalWidth, el.naturalHeight, el.getBoundingClientRect().width, "
                             "el.getBoundingClientRect().height]", picture.element_handle())
        assert abs(size[2] - size[0]) <= 1 and abs(size[3] - size[1]) <= 1, size
        box = explorer.bounding_box()
        kernel = explorer.locator(".gilab-pe-kernel").bounding_box()
        status = explorer.locator(".gilab-pe-status")
        status_box = status.bounding_box()
        assert box["height"] < 620, box
        assert status_box["y"] + status_box["height"] - kernel["y"] < 620, (kernel, status_box)
        # no label and no button text is cut ("kernel k (..." before)
        cut = page.evaluate("""root => [...root.querySelectorAll('.widget-label, .widget-label-basic, button')]
                                   .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
                                   .map(el => el.textContent)""", explorer.element_handle())
        assert cut == [], cut
        save_figure(explorer, "placement_explorer.png")
        # a target count, typed into the slider's readout
        explorer.locator(".gilab-pe-mode button", has_text="target count").click()
        before = wait_settled(page, status)
        readout = explorer.locator(".gilab-pe-target .widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("200")
        page.keyboard.press("Enter")
        page.wait_for_function("([el, old]) => el.textContent !== old && el.textContent.includes('target 200')",
                               arg=[status.element_handle(), before], timeout=30_000)
        text = status.inner_text()
        n = int(text.split("N = ")[1].split(" ")[0].replace(",", ""))
        assert abs(n - 200) <= 4 and "⚠" not in text, text
        assert_clean(page)
    finally:
        page.close()
    elapsed(start, "placement explorer")


COMPARISON_CELLS = [
    "import torch.nn.functional as F\nimport gilab",
    ("image = F.interpolate(gilab.io.default_image()[None], size=(96, 80), mode='area')[0]\n"
     "comparison = gilab.widgets.StartComparison(image, name='small', downscale=1, budget=0.5)\n"
     "comparison"),
]


def test_start_comparison_runs_stops_and_reports_numbers(chromium, lab):
    import re

    base, token, root = lab
    start = time.perf_counter()
    write_notebook(root, "comparison.ipynb", COMPARISON_CELLS)
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    try:
        run_all_cells(page, base, token, "comparison.ipynb")
        assert_clean(page)
        widget = page.locator(".gilab-start-comparison")
        widget.wait_for(state="visible", timeout=30_000)
        widget.scroll_into_view_if_needed()
        assert widget.locator(".gilab-cmp-budget").bounding_box()["width"] >= 250  # it was 30 px
        assert "0.5 s" in widget.locator(".gilab-cmp-budget .widget-readout").inner_text()

        def pictures_ok():  # every render shows a picture (a placeholder before a run), never a broken one
            return page.evaluate("""root => [...root.querySelectorAll('img')]
                                        .every(img => img.complete && img.naturalWidth > 0)""",
                                 widget.element_handle())

        page.wait_for_function("root => [...root.querySelectorAll('img')].every(i => i.complete)",
                               arg=widget.element_handle(), timeout=30_000)
        assert pictures_ok()
        status = widget.locator(".gilab-cmp-status")
        result = widget.locator(".gilab-cmp-result")
        widget.locator(".gilab-cmp-run").click()
        page.wait_for_function("el => el.textContent.startsWith('done')", arg=status.element_handle(),
                               timeout=120_000)
        line = result.inner_text()
        assert "Speed-up of net" in line and re.search(r"over random \(GaussianImage\) (> )?\d+\.\dx", line), line
        assert re.search(r"net: \d+\.\d\d dB at 0\.5 s", line), line
        for kind in ("net", "quadtree", "random"):
            assert re.search(r"N [\d,]+: \d+\.\d\d dB", widget.locator(f".gilab-cmp-caption-{kind}").inner_text())
        save_figure(widget, "start_comparison.png")
        # again, and Stop during the first start: the captions and pictures say what happened
        widget.locator(".gilab-cmp-run").click()
        page.wait_for_function("el => el.textContent.startsWith('net')", arg=status.element_handle(),
                               timeout=60_000)
        widget.locator(".gilab-cmp-stop").click()
        page.wait_for_function("el => el.textContent.startsWith('stopped')", arg=status.element_handle(),
                               timeout=60_000)
        captions = widget.locator(".widget-html").all_inner_texts()
        assert not any("waiting" in c for c in captions), captions
        assert "not run" in widget.locator(".gilab-cmp-caption-random").inner_text()
        assert "stopped after" in result.inner_text()
        page.wait_for_function("root => [...root.querySelectorAll('img')].every(i => i.complete)",
                               arg=widget.element_handle(), timeout=30_000)
        assert pictures_ok()
        assert_clean(page)
    finally:
        page.close()
    elapsed(start, "start comparison")
