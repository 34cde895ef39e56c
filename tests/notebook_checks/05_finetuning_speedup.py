# Run in the kernel after notebooks/05_finetuning_speedup.ipynb (fast mode): what it must have achieved.
from gilab.study import psnr_at

assert set(runs) == {"net", "quadtree", "random"} and runs["net"]["n"] == runs["random"]["n"] == n
assert abs(runs["quadtree"]["n"] - n) <= 0.05 * n, (runs["quadtree"]["n"], n)  # the quad-tree aims at N
assert all(r["seconds"][-1] > 0.9 * max(config.budgets) for r in runs.values())
assert [s["budget"] for s in runs["net"]["snapshots"]] == sorted(config.budgets)
# the claim, at every budget: the net start is ahead of the random one at the same N and the same time
for budget in config.budgets:
    assert psnr_at(runs["net"], budget) > psnr_at(runs["random"], budget) + 3, (budget, runs["net"]["snapshots"])
assert runs["net"]["init_psnr"] > runs["quadtree"]["init_psnr"] > runs["random"]["init_psnr"]
[(ratio, bound)] = ratios["random"][min(config.budgets)]
assert ratio >= 2, ratios  # random needs at least twice as long as net's shortest budget (or never gets there)
assert (out / "gaussians" / f"{name}_net_init.safetensors").exists()
# the widget ran its three starts in the background, and the net beat random there too
assert comparison.runs_done == 3 and not comparison.running and not comparison.stopped and comparison.updates >= 3
assert set(live) == {"net", "quadtree", "random"} and live["net"]["n"] == comparison.n
assert psnr_at(live["net"], comparison.budget) > psnr_at(live["random"], comparison.budget)
assert "Speed-up of net" in comparison.summary and len(comparison.curve_view.value) > 1000
# The slower starts ran the stated multiple of the largest budget.
assert config.slow_factor == 4
assert all(runs[k]["seconds"][-1] > 0.9 * 4 * max(config.budgets) for k in ("quadtree", "random"))
# Section 6 read the committed convergence study; the exercises ran on it.
assert len(convergence) == 4 and all(s["config"]["iterations"] == 10_000 for s in convergence)
assert len(checks) == 16 and all(abs(a - b) < 1e-9 for a, b in checks)
assert set(done) == {"net", "quadtree", "random"} and all(v > 0 for v in done.values())
