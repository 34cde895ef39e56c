# Run in the kernel after notebooks/06_reproduce_paper.ipynb (fast mode): what it must have achieved.
# The study shown: all of figures/study/, the 24 Kodak images.
assert STUDY.name == "study" and len(studies) == len(sorted(STUDY.glob("kodim*.json"))) == 24, (STUDY, len(studies))

# Every image has the three starts, at one N, with a snapshot at every budget.
assert inits == ["net", "quadtree", "random"], inits
for study in studies:
    runs = {r["init"]: r for r in study["runs"]}
    assert set(runs) == set(inits), study["image"]
    assert runs["random"]["n"] == runs["net"]["n"], study["image"]
    assert abs(runs["quadtree"]["n"] - runs["net"]["n"]) < 0.05 * runs["net"]["n"], study["image"]
    for run in runs.values():
        assert [sn["budget"] for sn in run["snapshots"]] == budgets, (study["image"], run["init"])

# The tables show the published numbers beside ours, labelled as theirs.
for shown in (init_table, quality_md):
    assert f"{theirs['n']:,}" in shown and f"{theirs['init_psnr']:.2f}" in shown and "theirs" in shown, shown
assert theirs["n"] == 42_858 and theirs["init_psnr"] == 29.68
assert "| net |" in quality_md and "| random |" in quality_md and "| quadtree |" in quality_md
assert f"up to {PAPER_SPEEDUP}x" in speed_md and "never caught up" in speed_md
assert per_image_md.count("\n| kodim") == len(studies)

# The generator benchmark: all 24 Kodak images at the reference's N, ahead of the quad-tree.
assert gen["summary"]["images"] == len(gen["per_image"]) == len(n_net) == len(n_quad) == 24
assert abs(ours["n"] - theirs["n"]) < 0.05 * theirs["n"] and ours["psnr"] > ours["quadtree"]["psnr"] + 1.5
assert rho > 0.5, rho  # N follows detail

# What the study found: the network's start is ahead of the random one at every budget, on every image.
assert all(psnr_of(s, "net", b) > psnr_of(s, "random", b) for s in studies for b in budgets)
assert set(speedups(studies)) == set(budgets) and len(per_image_speedup) == 2 * len(studies)
assert all(v > 0 for d in per_image_speedup.values() for v in d.values())

# Where the gap sits: the generator's own Gaussians, recoloured by least squares, on all 24 images.
assert len(colour_bound["images"]) == 24 and abs(bound_mean["n"] - theirs["n"]) < 0.05 * theirs["n"]
for row in colour_bound["images"]:  # more freedom never scores lower (small tolerance: CGLS stops after a fixed count)
    assert row["free"] >= row["factor"] - 0.05 and row["factor"] >= row["factor_few"] - 0.05, row
    assert row["factor_few"] >= row["net"] - 0.01 and row["colour_step"] >= row["net"] - 0.01, row
# The same weights as the benchmark above: its fields-only and shipped numbers.
assert abs(bound_mean["net"] - ours["psnr_fields"]) < 0.05 and abs(bound_mean["colour_step"] - ours["psnr"]) < 0.05

# Section 3: the committed convergence study beside the paper's claim.
assert len(convergence) == 4 and "| 10,000 |" in conv_md and len(at_10k) == 4
# ... and the 24-image run with the shipped weights: every image, net ahead of random at every milestone.
assert len(conv24) == 24 and last == 10_000 and len(xs) == len(ys) == 24, (len(conv24), last)
assert ahead_all == 24 and all(y > 1 for y in ys), (ahead_all, min(ys))
# Exercises: the dB arithmetic, the speed-up against detail, least-squares colours with no gradient left.
assert per_psnr.mean() > -10 * np.log10(mse.mean())  # Jensen
assert len(at_2s) == 24
assert grad.abs().max() < 1e-3 and squared_error(mine) < squared_error(few.colors)
