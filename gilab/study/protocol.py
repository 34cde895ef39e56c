"""The study's protocol: which starts, at which N, fine-tuned how long, and what is kept of each run.

For every image the generator ("net") sets N; the quad-tree and random starts are made at that same N. Each
start is fine-tuned by :func:`gilab.fit` with one recipe (``StudyConfig.param``: GaussianImage's Cholesky, or
rotation-scale as Instant-GI's code fine-tunes). Two modes:

- **time**: each start runs for the largest budget (the slower starts for ``slow_factor`` times it, so that the
  time they need to catch up is measured, not bounded); the Gaussians are kept at every budget by
  :class:`SnapshotRule` (the last step that ended at or before it; none where the init alone took longer).
- **iterations**: each start runs ``iterations`` steps; PSNR is logged densely (every step at first, then
  log-spaced) and MS-SSIM at log-spaced steps. Iteration counts do not depend on the machine.

Results go to one JSON per image (``<out>/runs/<image>.json``, written atomically) together with the
configuration that made them (each finished start is kept in ``runs/partial/`` until its image is done), so an
interrupted study resumes where it stopped, several processes
(``shard=(i, n)``, or torchrun ranks) share it, and a run of another configuration is never mixed in.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from .. import starts
from ..errors import GilabError
from ..files import write_atomic
from ..fitting import FitState, fit
from ..gaussians import Gaussians2D
from ..machine import describe as describe_machine

INITS = starts.STARTS
#: The starts that run ``slow_factor`` times the largest budget in the time mode.
SLOW_STARTS = ("quadtree", "random")


@dataclass
class StudyConfig:
    budgets: tuple[float, ...] = (2, 5, 10, 30, 60)  # seconds, init included (time mode)
    inits: tuple[str, ...] = INITS
    param: str = "cholesky"          # the fine-tuning recipe: "cholesky" (GaussianImage) or "rs" (Instant-GI)
    kernel_size: int = 3
    density: float = 1.0
    seed: int = 0
    history_points: int = 400        # the PSNR curve kept per run (log-spaced)
    slow_factor: float = 1.0         # time mode: quadtree and random run this multiple of the largest budget
    iterations: int | None = None    # iteration mode: every start runs this many steps (budgets unused)
    generator: str = ""              # the net start's weights: sha256 of the file (first 16 hex); run_study sets it

    @property
    def mode(self) -> str:
        return "time" if self.iterations is None else "iterations"

    def identity(self) -> dict:
        """What makes two runs comparable: every field but the history's resolution."""
        d = asdict(self)
        d.pop("history_points")
        d["budgets"] = sorted(float(b) for b in d["budgets"])
        d["inits"] = sorted(d["inits"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudyConfig:
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


@dataclass
class Snapshot:
    budget: float
    seconds: float
    iteration: int
    psnr: float = math.nan
    ms_ssim: float = math.nan


@dataclass
class RunRecord:
    init: str
    n: int
    init_seconds: float
    init_psnr: float
    snapshots: list[Snapshot] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    ms_ssim: list[tuple[int, float]] = field(default_factory=list)  # (iteration, MS-SSIM), iteration mode


def make_start(kind: str, image: torch.Tensor, n: int | None, config: StudyConfig, generator=None):
    """(Gaussians2D, seconds spent) for start ``kind`` at ``n`` Gaussians, made as ``config`` says
    (:func:`gilab.starts.make_start`; the generator decides n for "net")."""
    return starts.make_start(kind, image, None if kind == "net" else n, param=config.param, seed=config.seed,
                             kernel_size=config.kernel_size, density=config.density, generator=generator)


# --------------------------------------------------------------------- the snapshot rule
class SnapshotRule:
    """A fit callback that keeps, for every budget, the Gaussians of the last step that ended **at or before**
    it: never after, and nothing for a budget the init alone exceeded.

    Copying the Gaussians every step would cost as much as a small fit, so a copy (the candidate) is taken only
    when the next step could cross the next budget (within two steps' time of it); when a step ends past a
    budget, the candidate is that budget's snapshot. The study and the start-comparison widget both use it.
    """

    def __init__(self, budgets, start: Gaussians2D, init_seconds: float):
        self.pending = sorted(float(b) for b in budgets)
        self.kept: dict[float, tuple[float, int, Gaussians2D]] = {}  # budget -> (seconds, iteration, Gaussians)
        self.candidate = (init_seconds, 0, start)
        self.last_seconds = init_seconds
        self._settle(init_seconds)

    def __call__(self, state: FitState) -> bool:
        step = state.seconds - self.last_seconds
        self.last_seconds = state.seconds
        self._settle(state.seconds)
        if self.pending and state.seconds + 2 * step > self.pending[0]:
            self.candidate = (state.seconds, state.iteration, state.gaussians)
        return False

    def finish(self, seconds: float, iteration: int, gaussians: Gaussians2D):
        """The fit ended at ``seconds`` with ``gaussians``: settle what its last step crossed, and give the
        final state to the budgets it never reached."""
        self._settle(seconds)
        for budget in self.pending:
            self.kept[budget] = (seconds, iteration, gaussians)
        self.pending = []

    def _settle(self, now: float):
        while self.pending and now > self.pending[0]:
            budget = self.pending.pop(0)
            if self.candidate[0] <= budget:
                self.kept[budget] = self.candidate


# --------------------------------------------------------------------- one run
def run_one(image: torch.Tensor, kind: str, n: int | None, config: StudyConfig, generator=None,
            progress: bool = False, save_prefix: Path | None = None, checkpoint: Path | None = None) -> RunRecord:
    """Fine-tune one start in the configured mode (time: :func:`run_one_timed`, iterations:
    :func:`run_one_iterations`, which alone resumes from ``checkpoint``: a wall clock cannot be resumed)."""
    if config.mode == "iterations":
        return run_one_iterations(image, kind, n, config, generator, progress, save_prefix, checkpoint)
    return run_one_timed(image, kind, n, config, generator, progress, save_prefix)


def run_one_timed(image: torch.Tensor, kind: str, n: int | None, config: StudyConfig, generator=None,
                  progress: bool = False, save_prefix: Path | None = None) -> RunRecord:
    """One start under the time budgets, its Gaussians kept at each budget by :class:`SnapshotRule`.

    With ``save_prefix``, the start and every snapshot are saved as ``<prefix>_<init>_<budget>.safetensors``
    (budget "init" for the start), for the visual figures."""
    gaussians, init_seconds = make_start(kind, image, n, config, generator)
    budgets = sorted(config.budgets)
    length = budgets[-1] * (config.slow_factor if kind in SLOW_STARTS else 1.0)
    rule = SnapshotRule(budgets, gaussians, init_seconds)
    # return_on_interrupt=False: a start cut short by Ctrl-C is no result, and a resumed study would take it for one
    result = fit(image, init=gaussians, seconds=length, param=config.param, seed=config.seed,
                 init_seconds=init_seconds, callback=rule, callback_every=1, progress=progress,
                 return_on_interrupt=False)
    rule.finish(result.history.seconds[-1], result.iterations, result.gaussians)
    if save_prefix is not None:
        gaussians.save(f"{save_prefix}_{kind}_init.safetensors")
        for budget, (_, _, g) in rule.kept.items():
            g.save(f"{save_prefix}_{kind}_{budget:g}s.safetensors")
    snapshots = [_scored(Snapshot(b, t, i), g, image) for b, (t, i, g) in sorted(rule.kept.items())]
    h = result.history
    keep = log_spaced(h.seconds, config.history_points)
    return RunRecord(kind, len(gaussians), init_seconds, h.psnr[0], snapshots,
                     [h.seconds[i] for i in keep], [h.psnr[i] for i in keep], [h.iteration[i] for i in keep])


def run_one_iterations(image: torch.Tensor, kind: str, n: int | None, config: StudyConfig, generator=None,
                       progress: bool = False, save_prefix: Path | None = None,
                       checkpoint: Path | None = None) -> RunRecord:
    """One start for ``config.iterations`` steps: PSNR at every step up to 100 and log-spaced after (about
    ``history_points`` rows), MS-SSIM at about 30 log-spaced steps (scored from the fit's own render).

    With ``checkpoint``, the fit keeps its state there every two minutes and a killed start continues from it
    (:mod:`gilab.fit_checkpoint`); the MS-SSIM scores so far are kept beside it (``<checkpoint>.scores.json``)."""
    from ..metrics import ms_ssim

    gaussians, init_seconds = make_start(kind, image, n, config, generator)
    total = int(config.iterations)
    ssim_at = set(log_spaced_steps(total, 30))
    scores_path = None if checkpoint is None else Path(f"{checkpoint}.scores.json")
    scores: dict[int, float] = {}  # by step: a resumed fit may score a step again (the same parameters)
    if scores_path is not None and scores_path.exists() and Path(checkpoint).exists():
        scores = {int(step): value for step, value in json.loads(scores_path.read_text())}

    def score(state: FitState):
        if state.iteration in ssim_at:
            scores[state.iteration] = ms_ssim(state.image, image, fallback="scales").item()
            if scores_path is not None:
                write_atomic(scores_path, json.dumps(sorted(scores.items())))

    # return_on_interrupt=False: a start cut short by Ctrl-C is no result, and a resumed study would take it for one
    result = fit(image, init=gaussians, iters=total, param=config.param, seed=config.seed,
                 init_seconds=init_seconds, callback=score, callback_every=1, progress=progress,
                 return_on_interrupt=False, checkpoint=checkpoint)
    if scores_path is not None:
        scores_path.unlink(missing_ok=True)
    if save_prefix is not None:
        gaussians.save(f"{save_prefix}_{kind}_init.safetensors")
        result.gaussians.save(f"{save_prefix}_{kind}_{result.iterations}it.safetensors")
    h = result.history
    keep = sorted(set(log_spaced_steps(len(h) - 1, config.history_points)) | set(range(min(101, len(h)))))
    return RunRecord(kind, len(gaussians), init_seconds, h.psnr[0], [],
                     [h.seconds[i] for i in keep], [h.psnr[i] for i in keep], [h.iteration[i] for i in keep],
                     sorted(scores.items()))


def _scored(snap: Snapshot, g: Gaussians2D, image: torch.Tensor) -> Snapshot:
    """Score a snapshot after the clock stopped: evaluation is not training time."""
    from ..metrics import ms_ssim, psnr
    from ..render import render

    with torch.no_grad():
        out = render(g, *image.shape[-2:]).clamp(0, 1)
    snap.psnr = psnr(out, image).item()
    snap.ms_ssim = ms_ssim(out, image, fallback="scales").item()
    return snap


def log_spaced(seconds: list[float], count: int) -> list[int]:
    """Indices of about ``count`` rows spread evenly in log time (the first and last always kept)."""
    if len(seconds) <= count:
        return list(range(len(seconds)))
    lo, hi = math.log(max(seconds[0], 1e-3)), math.log(max(seconds[-1], 1e-3))
    marks = [math.exp(lo + (hi - lo) * k / (count - 1)) for k in range(count)]
    picked, j = [], 0
    for mark in marks:
        while j < len(seconds) - 1 and seconds[j] < mark:
            j += 1
        if not picked or picked[-1] != j:
            picked.append(j)
    return picked


def log_spaced_steps(total: int, count: int) -> list[int]:
    """About ``count`` step numbers from 0 to ``total``, evenly spaced in log(1 + step), both ends kept."""
    if total <= 0:
        return [0]
    marks = {round(math.expm1(math.log1p(total) * k / (count - 1))) for k in range(count)}
    return sorted(marks | {0, total})


# --------------------------------------------------------------------- the study
def run_study(images: list[Path], out: Path, config: StudyConfig, shard: tuple[int, int] = (0, 1),
              progress: bool = True) -> list[Path]:
    """Run every (image, start) of this shard not already on disk; returns the per-image JSON files.

    Raises:
        GilabError: ``out`` holds results of another configuration (they are never mixed in or overwritten).
    """
    from tqdm.auto import tqdm

    from ..io import load_image

    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if "net" in config.inits and not config.generator:  # results of other weights must not be mixed in either
        config = replace(config, generator=weights_fingerprint())
    check_configuration(runs, config)
    index, count = shard
    mine = [p for i, p in enumerate(sorted(images)) if i % count == index]
    generator = _load_generator() if "net" in config.inits else None
    warm_up()
    written = []
    for path in tqdm(mine, desc=f"study shard {index + 1}/{count}", unit="image", disable=not progress):
        target = runs / f"{Path(path).stem}.json"
        if target.exists():
            written.append(target)
            continue
        image = load_image(path)
        records, n = [], None
        snapshots_dir = out / "gaussians"
        snapshots_dir.mkdir(exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        for kind in sorted(config.inits, key=INITS.index):  # the net first: it sets N
            # Each finished start is kept on its own, so a long run (50,000 iterations) loses at most one start.
            part = runs / "partial" / f"{Path(path).stem}.{kind}.json"
            record = _read_partial(part)
            if record is None:
                # A bar per start in iteration mode (a 50,000-iteration start runs the better part of an hour);
                # none in time mode, where the clock is the measurement.
                record = run_one(image, kind, n, config, generator, progress=progress and config.mode == "iterations",
                                 save_prefix=snapshots_dir / Path(path).stem,
                                 checkpoint=out / "checkpoints" / f"{Path(path).stem}.{kind}.fit")
                part.parent.mkdir(exist_ok=True)
                write_atomic(part, json.dumps({"config": asdict(config), "run": asdict(record)}))
            n = n or record.n
            records.append(record)
        payload = {"image": Path(path).name, "height": image.shape[1], "width": image.shape[2],
                   "config": asdict(config), "machine": describe_machine(),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "runs": [asdict(r) for r in records]}
        write_atomic(target, json.dumps(payload, indent=1))
        for kind in config.inits:
            (runs / "partial" / f"{Path(path).stem}.{kind}.json").unlink(missing_ok=True)
        written.append(target)
    return written


def _read_partial(path: Path) -> RunRecord | None:
    """The record of a start that finished before the study was stopped (None if there is none); its
    configuration was checked with the folder's by :func:`check_configuration`."""
    if not path.exists():
        return None
    d = json.loads(path.read_text())["run"]
    d["snapshots"] = [Snapshot(**s) for s in d["snapshots"]]
    d["ms_ssim"] = [tuple(pair) for pair in d["ms_ssim"]]
    return RunRecord(**d)


def check_configuration(folder: Path, config: StudyConfig):
    """Refuse a results folder whose runs were made with another configuration (one line: what differs)."""
    for path in sorted(Path(folder).glob("*.json")) + sorted(Path(folder).glob("partial/*.json")):
        try:
            stored = StudyConfig.from_dict(json.loads(path.read_text()).get("config", {}))
        except (ValueError, TypeError, AttributeError):
            raise GilabError(f"{path}: not a study result; remove it or use another --out") from None
        theirs, ours = stored.identity(), config.identity()
        if theirs != ours:
            diff = ", ".join(f"{k} {theirs[k]} (asked: {ours[k]})" for k in ours if theirs.get(k) != ours[k])
            raise GilabError(f"{path} was computed with {diff}; use another --out, or delete the folder to redo it")


def warm_up():
    """Load the rasterizer's compiled kernels and the generator's modules once, so that no start pays for them
    in its timed budget. Without the generator's pass here the first net start of a process took ~3 s more
    (imports and the colour step's kernels: kodim01 and kodim02 of figures/convergence24 carry it)."""
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    fit(image, n=20, iters=2, progress=False)
    fit(image, n=20, iters=2, param="rs", progress=False)
    starts.make_start("net", image)


def weights_fingerprint(path: Path | None = None) -> str:
    """The first 16 hex digits of the sha256 of the generator's weights file (default: the shipped one)."""
    import hashlib

    from ..generator.generator import WEIGHTS

    return hashlib.sha256(Path(path or WEIGHTS).read_bytes()).hexdigest()[:16]


def _load_generator():
    from ..generator import Generator

    return Generator.from_pretrained()


