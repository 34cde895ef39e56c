#!/usr/bin/env bash
# The GPU check of issue #16 in one run on a CUDA machine, about 8 minutes:
#   1. an environment (out/gpu-venv) that uses this machine's CUDA torch and triton as they are: it sees the base
#      python's packages through a .pth file, and pip installs gilab's missing ones under a constraint that pins
#      torch, triton and numpy to the installed versions (`make setup` would install its CPU-era torch pin instead);
#   2. make test-gpu (pytest -m gpu: gsplat, torch and triton against the dense reference on CUDA);
#   3. the CUDA rows of benchmarks/rasterizer.py (torch and triton sum, gsplat alpha) -> figures/rasterizer_cuda.*;
#   4. benchmarks/fitting_gpu.py (triton launch sweep, fit iterations/s at 40k and 70k Gaussians, one
#      50,000-iteration fit at 70k, capped by what the budget has left) -> figures/fitting_gpu.json.
# Usage: make gpu-check (or bash scripts/gpu_check.sh). Settings, from the environment:
#   PYTHON       a python whose torch sees CUDA (default: .venv/bin/python if its torch does, else python3)
#   WHEELS       a folder of wheels to install from with no package index (default: .whl when it exists)
#   KODAK_IMAGE  the fitting benchmark's image (default: kodim01.png from $GILAB_DATA/kodak, ../shared/data/kodak
#                or out/kodak; on a machine with no data, copy one there)
#   BUDGET_S     the whole run's budget, seconds (default 480)
# Everything printed also goes to out/gpu_check.log; with $OUT set (a device runner's output folder) the figures
# and the log are copied there. Exits 2 without CUDA, 1 if a step failed, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out figures
exec > >(tee out/gpu_check.log) 2>&1
START=$SECONDS
BUDGET_S=${BUDGET_S:-480}
VENV=out/gpu-venv
VPY=$VENV/bin/python
FAILED=()

elapsed() { echo $((SECONDS - START)); }

has_cuda() { "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

stage() {  # stage NAME LIMIT_S COMMAND...: run under a time limit; a failure is noted and the next step runs
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s; $(elapsed) s gone)"
    if ! timeout -k 10 "$limit" "$@"; then
        echo "== $name FAILED"
        FAILED+=("$name")
    fi
}

pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        has_cuda "$PYTHON" && return
    else
        for PYTHON in .venv/bin/python python3; do
            has_cuda "$PYTHON" && return
        done
    fi
    echo "gpu-check: no python here has a torch that sees CUDA (set PYTHON to one)" >&2
    exit 2
}

make_env() {  # out/gpu-venv: the base python's packages plus gilab's missing ones, torch untouched
    [ -x "$VPY" ] || "$PYTHON" -m venv --without-pip "$VENV" || return
    local site
    site=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || return
    "$PYTHON" -c "import site; print('\n'.join(site.getsitepackages() + [site.getusersitepackages()]))" \
        >"$site/gilab_gpu_base.pth" || return
    "$VPY" - >"$VENV/constraints.txt" <<'EOF'
import importlib.metadata as metadata
for name in ("torch", "triton", "numpy"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
EOF
    echo "keeping: $(tr '\n' ' ' <"$VENV/constraints.txt")"
    local wheels=${WHEELS:-$([ -d .whl ] && echo .whl)}
    local source=()
    [ -n "$wheels" ] && source=(--no-index --find-links "$wheels")
    pip_install() {  # no retries: with no index reachable, fail in seconds rather than minutes
        "$VPY" -m pip install -q --retries 0 --timeout 10 --no-build-isolation -c "$VENV/constraints.txt" \
            ${source[@]+"${source[@]}"} "$@"
    }
    if ! pip_install -e '.[dev,gpu]'; then
        echo "gpu-check: the full install failed (no package index? set WHEELS); installing gilab, then what the GPU" \
            "checks import and this python lacks, one by one"
        pip_install --no-deps -e . || return
        local pair
        for pair in numpy:numpy scipy:scipy numba:numba matplotlib:matplotlib pillow:PIL tqdm:tqdm pooch:pooch \
            safetensors:safetensors pytorch-msssim:pytorch_msssim pytorch-optimizer:pytorch_optimizer \
            packaging:packaging gsplat==1.5.3:gsplat pytest:pytest pytest-xdist:xdist nbformat:nbformat; do
            "$VPY" -c "import ${pair#*:}" 2>/dev/null && continue
            pip_install "${pair%%:*}" >/dev/null 2>&1 || echo "  could not install ${pair%%:*}"
        done
    fi
    touch "$VENV/.gilab-installed"  # newer than pyproject.toml: make's setup step has nothing left to do
    "$VPY" - <<'EOF'
import importlib.util

import torch
import triton
from gilab.render import available_backends

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}), "
      f"triton {triton.__version__}")
for name, (ok, why) in available_backends().items():
    print(f"  {name:<7} {ok!s:<5} {why}")
missing = [m for m in ("gsplat", "pytorch_optimizer", "pytest") if importlib.util.find_spec(m) is None]
if missing:
    print("missing, so the steps that need them will fail:", ", ".join(missing))
EOF
}

kodak_image() {
    local candidate
    for candidate in "${KODAK_IMAGE:-}" "${GILAB_DATA:-}/kodak/kodim01.png" ../shared/data/kodak/kodim01.png \
        out/kodak/kodim01.png; do
        [ -n "$candidate" ] && [ -f "$candidate" ] && echo "$candidate" && return
    done
}

pick_python
echo "gpu-check: $(date -u '+%Y-%m-%d %H:%M UTC'), python $PYTHON, budget $BUDGET_S s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
echo "== environment ($(elapsed) s gone)"
if ! make_env; then
    echo "gpu-check: could not make an environment with gilab, triton and gsplat; see above" >&2
    exit 1
fi
# gsplat compiles its CUDA code on first use: for this GPU's architecture alone, which saves most of that time
arch=$("$VPY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
unset TRITON_INTERPRET  # the compiled kernels, not the interpreter
# a test module whose optional import is missing here must not stop the GPU tests in the others from running
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} --continue-on-collection-errors"

if command -v make >/dev/null; then
    stage "make test-gpu" 270 make VENV="$VENV" test-gpu
else
    stage "pytest -m gpu" 270 "$VPY" -m pytest -q -m gpu
fi
stage "rasterizer CUDA rows" 150 "$VPY" benchmarks/rasterizer.py --cuda-only
image=$(kodak_image)
if [ -z "$image" ]; then
    echo "== fitting benchmark: no Kodak image (set KODAK_IMAGE, or copy kodim01.png to out/kodak/)"
    FAILED+=("fitting benchmark (no image)")
else
    full_s=$((BUDGET_S - $(elapsed) - 60))  # what is left, less the sweep, the throughput runs and the start
    [ "$full_s" -ge 30 ] || full_s=30
    stage "fitting benchmark" $((full_s + 120)) \
        "$VPY" benchmarks/fitting_gpu.py --image "$image" --full-seconds "$full_s"
fi

echo "== done in $(elapsed) s; failed: ${FAILED[*]:-nothing}"
if [ -n "${OUT:-}" ]; then
    cp -f figures/rasterizer_cuda.json figures/rasterizer_cuda.png figures/fitting_gpu.json "$OUT"/ 2>/dev/null
    cp -f out/gpu_check.log "$OUT"/
fi
[ ${#FAILED[@]} -eq 0 ]
