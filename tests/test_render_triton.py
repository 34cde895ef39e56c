"""The ``triton`` backend (sum blending) against the dense reference: images and every gradient.

Without CUDA the kernels run on CPU tensors through Triton's interpreter. Triton fixes that mode per process when it
is first imported (triton.language wraps its own helpers such as ``tl.sum`` then), so this module sets
TRITON_INTERPRET=1 before it imports the backend, which imports triton. The variable stays set for the rest of the
pytest worker; nothing else in gilab uses triton on the CPU (``auto`` never picks it there). With CUDA the variable
is left alone: the ``gpu`` tests run the same checks with the compiled kernels and the interpreter tests skip.
Without triton every test here skips, or fails when ``CI`` is set (triton is in the dev extra).
"""

import json
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton's first import, below

import pytest
from render_cases import BACKGROUND, NAMES, assert_matches_dense, hard_cases, image_and_grads, random_cholesky

import gilab
from gilab import Gaussians2D
from gilab.render import dense
from gilab.render import triton as backend

CUDA = torch.cuda.is_available()
CASES = hard_cases()


def _skip_or_fail(reason: str):
    """Skip, or fail when CI is set: a green CI run means these tests ran (tests/conftest.py's convention)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _triton_installed():
    if backend.triton is None:
        _skip_or_fail(backend.available()[1])


@pytest.fixture
def interpreter():
    if CUDA:
        pytest.skip("with CUDA the compiled kernels are tested instead (the gpu tests)")
    if backend.mode() != "interpreter":
        _skip_or_fail(f"the interpreter is not usable here ({backend.available()[1]}); did something import "
                      "triton before this module set TRITON_INTERPRET=1?")


@pytest.fixture
def cuda():
    if not CUDA:
        pytest.skip("needs CUDA")
    assert backend.available()[0], backend.available()[1]


def crowd(n, height, width, centre, seed):
    """n Gaussians of 2-6 px crowded within a pixel or two of ``centre`` (x, y): every one of them reaches the
    tiles around it. Colours are small so the sum stays near 1, where a missing Gaussian would show."""
    g = random_cholesky(n, height, width, seed=seed, scale=(2.0, 6.0))
    jitter = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    means = torch.tensor(centre) + jitter
    return Gaussians2D.from_cholesky(means, g.cholesky, g.colors * (1.0 / n), g.opacities), height, width


def mixed(height=70, width=40):
    """Gaussians spanning many tiles next to sub-pixel ones, on a canvas that is no multiple of 16 wide."""
    big = random_cholesky(5, height, width, seed=23, scale=(8.0, 20.0))
    small = random_cholesky(300, height, width, seed=24, scale=(0.1, 1.0))
    tensors = [torch.cat([x, y]) for x, y in zip((big.means, big.cholesky, big.colors, big.opacities),
                                                  (small.means, small.cholesky, small.colors, small.opacities))]
    return Gaussians2D.from_cholesky(*tensors), height, width


EXTRA = {
    "300_over_one_tile": lambda: crowd(300, 40, 40, (24.0, 24.0), seed=41),       # > 256: the reference's cap
    "2000_over_a_tile_corner": lambda: crowd(2000, 24, 40, (16.0, 16.0), seed=42),  # > 1,500 in four tiles
    "mixed_sizes": mixed,
}


# ---------------------------------------------------------------------------------- interpreter (any machine)
@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("case", sorted(CASES))
def test_triton_matches_dense(case):
    g, height, width = CASES[case]
    assert_matches_dense(g, height, width, "sum", "triton", label=f"{case}/")


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("case", sorted(EXTRA))
def test_triton_matches_dense_crowded(case):
    g, height, width = EXTRA[case]()
    assert_matches_dense(g, height, width, "sum", "triton", label=f"{case}/")


@pytest.mark.usefixtures("interpreter")
def test_every_gaussian_over_a_pixel_counts():
    """No cap per tile: 1,000 Gaussians centred on one pixel all count (the reference CUDA code stops at 256)."""
    n = 1000
    g = Gaussians2D.from_cholesky(torch.full((n, 2), 8.5), torch.tensor([[2.0, 0.0, 2.0]]).repeat(n, 1),
                                  torch.full((n, 3), 1e-3))
    image = gilab.render(g, 16, 16, backend="triton")
    assert image[0, 8, 8].item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.usefixtures("interpreter")
def test_cutoff_is_exact():
    """Just under 1/255 is exactly zero, just over it is kept, and an opacity of exactly float32(1/255) on a pixel
    centre (v = o there) is kept, as dense keeps it: the binning must not drop it."""
    cutoff32 = torch.tensor(1 / 255, dtype=torch.float32).item()
    for o, kept in [(0.99 / 255, False), (1.01 / 255, True), (cutoff32, True)]:
        g = Gaussians2D.from_cholesky(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]]),
                                      torch.ones(1, 3), torch.tensor([o]))
        for name in ["dense", "triton"]:
            assert (gilab.render(g, 1, 1, backend=name)[0, 0, 0].item() > 0) == kept, (name, o)


@pytest.mark.usefixtures("interpreter")
def test_gradient_at_the_clamp():
    """A mean on a pixel centre gives v = 1 there: min(1, v) passes the gradient, as torch's clamp does."""
    g = Gaussians2D.from_cholesky(torch.tensor([[2.5, 1.5]]), torch.tensor([[1.0, 0.3, 1.2]]),
                                  torch.tensor([[0.3, 0.6, 0.9]]))
    assert_matches_dense(g, 4, 5, "sum", "triton")


@pytest.mark.usefixtures("interpreter")
def test_conic_that_is_not_positive_definite_matches_dense():
    """A hyperbolic conic has no ellipse: it is binned to the whole image and the per-pixel test decides, as in
    dense (gsplat drops such Gaussians)."""
    means = torch.tensor([[10.0, 12.0], [30.0, 5.0], [20.0, 10.0]])
    conics = torch.tensor([[0.5, 0.6, 0.5], [0.2, 0.0, -0.01], [0.01, 0.05, 0.01]])  # det < 0; c < 0; det < 0
    colors = torch.tensor([[0.3, 0.6, 0.9], [0.5, 0.1, 0.2], [0.2, 0.2, 0.7]])
    opacities = torch.tensor([0.8, 0.5, 0.5 / 255])  # the last is below the cutoff at its mean, above it far off
    results = []
    for name in ["dense", "triton"]:
        leaves = [t.clone().requires_grad_() for t in (means, conics, colors, opacities)]
        image = gilab.render.rasterize(*leaves, 20, 40, backend=name)
        (image * torch.linspace(0, 1, image.numel()).view_as(image)).sum().backward()
        results.append([image.detach()] + [t.grad for t in leaves])
    for name, d, t in zip(NAMES[:1] + ["means", "conics", "colors", "opacities"], *results):
        assert torch.allclose(t, d, rtol=1e-4, atol=1e-5), name


@pytest.mark.usefixtures("interpreter")
def test_float64_inputs_are_computed_in_float32():
    """float64 in, float64 out (image and gradients), equal to dense in float64 to float32 rounding."""
    g, height, width = CASES["random"]
    g64 = g.to(torch.float64)
    truth = image_and_grads(g64, height, width, "sum", "dense")
    out = image_and_grads(g64, height, width, "sum", "triton")
    for name, t, o in zip(NAMES, truth, out):
        assert o.dtype == torch.float64, name
        assert (o - t).abs().max().item() <= 1e-4 * max(1.0, t.abs().max().item()), name


@pytest.mark.usefixtures("interpreter")
def test_strided_inputs_and_expanded_gradient():
    """Non-contiguous inputs and the stride-0 gradient of ``.sum()`` give dense's gradients."""
    g = random_cholesky(40, 12, 15, seed=25)
    wide = torch.cat([g.colors, torch.zeros_like(g.colors)], 1)  # colours as a strided view
    results = []
    for name in ["triton", "dense"]:
        leaves = [g.means.clone().requires_grad_(), g.conics().detach().t().contiguous().t().requires_grad_(),
                  wide.clone().requires_grad_(), g.opacities.clone().requires_grad_()]
        image = gilab.render.rasterize(leaves[0], leaves[1], leaves[2][:, :3], leaves[3], 12, 15, backend=name)
        image.sum().backward()
        results.append([image.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ binning (plain PyTorch, no kernel)
@pytest.mark.parametrize("case", sorted(CASES) + sorted(EXTRA))
def test_tile_boxes_hold_every_contributing_pixel(case):
    """Every pixel where dense's float32 v passes the cutoff lies in a tile of its Gaussian's box."""
    g, height, width = CASES[case] if case in CASES else EXTRA[case]()
    if not len(g):
        return
    params = backend.pack(g.means, g.conics(), g.colors, g.opacities)
    boxes = backend.tile_boxes(params, height, width)                               # (N, 4) tiles
    pixels = dense.pixel_centres(height, width)
    v = dense.gaussian_values(g.means, g.conics(), g.opacities, pixels)            # (P, N)
    tiles = (pixels // backend.TILE).long()                                          # (P, 2) tile (x, y)
    inside = ((tiles[:, None, 0] >= boxes[None, :, 0]) & (tiles[:, None, 0] <= boxes[None, :, 2])
              & (tiles[:, None, 1] >= boxes[None, :, 1]) & (tiles[:, None, 1] <= boxes[None, :, 3]))
    assert not (v > 0)[~inside].any(), case


def test_bin_tiles_lists_each_tile_in_index_order():
    """bin_tiles gives, per tile, exactly the Gaussians whose box holds the tile, in increasing index."""
    g, height, width = mixed(45, 50)
    params = backend.pack(g.means, g.conics(), g.colors, g.opacities)
    boxes = backend.tile_boxes(params, height, width).tolist()
    gids, starts = backend.bin_tiles(params, height, width)
    tiles_x, tiles_y = -(-width // backend.TILE), -(-height // backend.TILE)
    assert starts.shape == (tiles_x * tiles_y + 1,) and starts[-1] == len(gids)
    for t in range(tiles_x * tiles_y):
        tx, ty = t % tiles_x, t // tiles_x
        expected = [i for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= tx <= x1 and y0 <= ty <= y1]
        assert gids[starts[t]:starts[t + 1]].tolist() == expected, t


def test_faint_and_nan_gaussians_are_binned_nowhere():
    means = torch.tensor([[4.0, 4.0], [4.0, 4.0], [float("nan"), 4.0], [100.0, 4.0]])
    conics = torch.tensor([[1.0, 0.0, 1.0]]).repeat(4, 1)
    params = backend.pack(means, conics, torch.ones(4, 3), torch.tensor([1.0, 0.5 / 255, 1.0, 1.0]))
    boxes = backend.tile_boxes(params, 8, 8)
    empty = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    assert empty.tolist() == [False, True, True, True]


# ------------------------------------------------------------------------------- availability and refusals
def test_available_follows_the_mode_triton_was_imported_in():
    """In a fresh process without TRITON_INTERPRET: usable only with CUDA, and saying why not. Setting the variable
    after triton's import cannot switch to the interpreter (triton.language's helpers are already compiled-mode):
    the backend says so instead of failing inside a kernel."""
    code = ("import importlib, json, os; os.environ.pop('TRITON_INTERPRET', None); import triton.language\n"
            "from gilab.render import triton as b; out = [b.mode(), *b.available()]\n"
            "os.environ['TRITON_INTERPRET'] = '1'; importlib.reload(b); out += [b.mode(), *b.available()]\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    compiled, ok, why, mixed, ok_mixed, why_mixed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert compiled == "compiled" and ok == CUDA
    if not CUDA:
        assert "needs CUDA" in why and "TRITON_INTERPRET=1" in why
    assert mixed == "mixed" and not ok_mixed and "before the first import of triton" in why_mixed


def test_kernels_compile_for_a_gpu():
    """Triton's real compiler takes the kernels to sm_90 (H100/H200) machine code here, without a GPU: what the
    interpreter cannot check (constexpr use, types, the lowering of the loop and of the atomics)."""
    code = """
import json, os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from gilab.render import triton as b
out = {}
for name, fn, extra in [("forward", b._forward_kernel, {"image": "*fp32"}),
                        ("backward", b._backward_kernel, {"grad_image": "*fp32", "grads": "*fp32"})]:
    launch = b.LAUNCH["compiled"][name]
    consts = {"CUTOFF": b._CUTOFF32, "TILE": b.TILE, "PARAMS": b.PARAMS, "BLOCK": launch["BLOCK"]}
    sig = {"params": "*fp32", "gids": "*i32", "starts": "*i32", **extra, "height": "i32", "width": "i32",
           "tiles_x": "i32", **{k: "constexpr" for k in consts}}
    try:
        source = ASTSource(fn=fn, signature=sig, constexprs=consts)
    except TypeError as exc:  # another triton's compile API
        out = {"skip": f"triton {triton.__version__}: {exc}"}
        break
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": launch["num_warps"]})
    ptx = kernel.asm["ptx"]
    out[name] = ptx.count("red.global") + ptx.count("atom.global")
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    atomics = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in atomics:
        pytest.skip(atomics["skip"])
    assert atomics["forward"] == 0 and atomics["backward"] >= backend.PARAMS  # one per gradient column


def test_available_in_this_process():
    ok, why = backend.available()
    assert ok == (CUDA or backend.mode() == "interpreter"), why
    assert gilab.render.available_backends()["triton"] == (ok, why)


@pytest.mark.usefixtures("interpreter")
def test_refusals():
    g = random_cholesky(3, 4, 4)
    args = (g.means, g.conics(), g.colors, g.opacities, 4, 4)
    with pytest.raises(ValueError, match="'gsplat' on CUDA or 'cpu'"):
        backend.rasterize(*args, blend="alpha")
    with pytest.raises(ValueError, match="conics must have shape"):
        backend.rasterize(g.means, g.conics()[:, :2], *args[2:])
    with pytest.raises(TypeError, match="float"):
        backend.rasterize(g.means, g.conics(), g.colors.int(), *args[3:])
    with pytest.raises(ValueError, match="renders CUDA tensors"):
        backend.rasterize(torch.empty(3, 2, device="meta"), *args[1:])


def test_auto_never_picks_triton_on_cpu():
    """Even with the interpreter on, CPU tensors go to 'cpu' (or 'torch'): the interpreter is for tests."""
    assert gilab.render.pick_backend(torch.device("cpu"), "sum") in ("cpu", "torch")


# -------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.usefixtures("cuda")
@pytest.mark.parametrize("case", sorted(CASES) + sorted(EXTRA))
def test_triton_on_cuda_matches_dense(case):
    """The compiled kernels on CUDA against dense on CUDA. tl.exp is the fast hardware exp there; on these cases no
    contribution lies within 3e-6 (relative) of the cutoff but one of the 1,500-crowd's, whose flip moves the
    image by 4e-6, inside the bound."""
    g, height, width = CASES[case] if case in CASES else EXTRA[case]()
    assert_matches_dense(g, height, width, "sum", "triton", label=f"{case}: ", device="cuda")


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda")
def test_auto_on_cuda_picks_triton_for_sum_and_float64_works():
    assert gilab.render.pick_backend(torch.device("cuda"), "sum") == "triton"
    g = random_cholesky(30, 20, 24, dtype=torch.float64).to("cuda")
    out = gilab.render(g, 20, 24, backend="triton")
    assert out.dtype == torch.float64 and out.is_cuda
    assert torch.allclose(out, gilab.render(g, 20, 24, backend="dense"), atol=1e-5)
    background = BACKGROUND.to("cuda")  # sum blending ignores a background, as every backend does
    assert torch.equal(gilab.render(g, 20, 24, backend="triton", background=background), out)
