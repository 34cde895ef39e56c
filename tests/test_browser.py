"""A real browser: JupyterLab in headless Chromium runs ``01_rasterizer`` and the playground answers its slider.

What it does: starts JupyterLab on 127.0.0.1 (a free port, a random token, every Jupyter folder in a temporary
directory, a ``python3`` kernelspec for this interpreter), opens a copy of the notebook through Playwright with
Debian's Chromium (never a downloaded browser), runs all cells (in fast mode), checks that no cell raised or
wrote to stderr and no widget failed to display, moves the playground's x slider with the keyboard, and checks
that the rendered picture changed. A second test checks the fit monitor: while the fit runs in its thread the
kernel is idle, the picture keeps changing, and the Stop button ends the fit.

It saves a screenshot of the playground to ``figures/playground.png`` when that file is missing or when
``GILAB_UPDATE_FIGURES=1`` (so that ``make test`` leaves the checkout clean).

Needs ``playwright`` (the Python package) and ``/usr/bin/chromium`` (``apt-get install chromium``). Without them
the test is skipped, except when ``CI`` is set: there a missing browser is a failure, so it cannot hide.
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
FIGURE = ROOT / "figures" / "playground.png"
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


def run_all_cells(page, base: str, token: str, name: str):
    """Open notebook ``name`` in JupyterLab, wait for its kernel, run all cells and wait until all have run."""
    # reset: start from an empty workspace, not with the notebooks an earlier test left open
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_function("""name => { const w = window.jupyterapp && jupyterapp.shell.currentWidget;
                                        return w && w.sessionContext && w.context && w.context.path === name; }""",
                           arg=name, timeout=90_000)
    # the toolbar says idle before a kernel exists: wait on the session itself
    page.evaluate("async () => { await jupyterapp.shell.currentWidget.sessionContext.ready; }")
    page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
    # done when every code cell has an execution count, none is queued or running ([*]) and the kernel idles
    page.wait_for_function("""() => {
        const panel = jupyterapp.shell.currentWidget;
        const cells = panel.content.widgets.filter(c => c.model.type === 'code');
        const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
        return kernel && kernel.status === 'idle' && cells.length > 0
            && cells.every(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*'));
    }""", timeout=240_000, polling=500)


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
        # the README's picture: written when missing or asked for, so that a test run leaves the checkout clean
        if not FIGURE.exists() or os.environ.get("GILAB_UPDATE_FIGURES") == "1":
            FIGURE.parent.mkdir(exist_ok=True)
            playground.screenshot(path=str(FIGURE))
    finally:
        page.close()
    print(f"browser test: 01_rasterizer ran in {ran:.1f} s, {time.perf_counter() - start:.1f} s in all")


MONITOR_CELLS = [
    "import torch\nimport gilab",
    ("y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing='ij')\n"
     "target = torch.stack([x, y, (x * y) ** 0.5])\n"
     "monitor = gilab.widgets.FitMonitor(target, n=200, iters=1_000_000, every=5, min_interval=0.2)\n"
     "monitor.start()"),
]


def test_fit_monitor_updates_live_and_stops(chromium, lab):
    """The fit runs in a background thread: the kernel is idle, the render and the curve keep changing, and
    the Stop button (a message the idle kernel handles) ends the fit."""
    import nbformat

    base, token, root = lab
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(src) for src in MONITOR_CELLS]
    nbformat.write(nb, root / "monitor.ipynb")
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        run_all_cells(page, base, token, "monitor.ipynb")  # returns while the fit still runs: the kernel is idle
        assert_clean(page)
        monitor = page.locator(".gilab-fit-monitor")
        monitor.wait_for(state="visible", timeout=30_000)
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
        stop = monitor.locator(".gilab-fit-stop")
        assert stop.is_enabled()
        stop.click()
        page.wait_for_function("el => el.textContent.startsWith('stopped:')", arg=status.element_handle(),
                               timeout=30_000)
        assert stop.is_disabled()
        assert_clean(page)
    finally:
        page.close()
