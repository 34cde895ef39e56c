"""The paper's claim, measured: how much sooner does a start reach a given quality at the same N?

    gilab study --budgets 2 5 10 30 60                  # time mode: wall-clock budgets, init included
    gilab study --iters 10000 --out out/convergence    # iteration mode: milestones, machine-independent

One idea per module: ``protocol`` (the configuration, the starts, one run, the snapshot rule, the resumable
study), ``analysis`` (PSNR at a time or step, speed-ups), ``tables`` (the Markdown report and its figures, which
live in :mod:`gilab.plots.study`).
"""

from .analysis import (
    GAUSSIANIMAGE_KODAK,
    REFERENCE,
    iteration_speedups,
    load_runs,
    milestones,
    psnr_at,
    speedups,
    time_to_reach,
)
from .protocol import INITS, RunRecord, Snapshot, SnapshotRule, StudyConfig, make_start, run_one, run_study, warm_up
from .tables import convergence_table, quality_table, speedup_table, summarise

__all__ = ["GAUSSIANIMAGE_KODAK", "INITS", "REFERENCE", "RunRecord", "Snapshot", "SnapshotRule", "StudyConfig",
           "convergence_table", "iteration_speedups", "load_runs", "make_start", "milestones", "psnr_at",
           "quality_table", "run_one", "run_study", "speedup_table", "speedups", "summarise", "time_to_reach",
           "warm_up"]
