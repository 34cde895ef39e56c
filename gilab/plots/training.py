"""The generator's training curves, drawn from its ``log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_path


def plot_curves(log_path: Path, png: Path, smooth: int = 25):
    """Training loss / PSNR per step (smoothed) and validation PSNR per epoch, from log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_psnr" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))

    def smoothed(values):
        out, acc = [], []
        for v in values:
            acc = (acc + [v])[-smooth:]
            out.append(sum(acc) / len(acc))
        return out

    if steps:
        x = [r["step"] for r in steps]
        axes[0].plot(x, smoothed([r["loss"] for r in steps]), label="total")
        axes[0].plot(x, smoothed([r["rec"] for r in steps]), label="L_rec")
        axes[0].plot(x, smoothed([r["ppm"] for r in steps]), label="L_ppm")
        axes[0].set_yscale("log")
        axes[0].legend()
        axes[1].plot(x, smoothed([r["psnr"] for r in steps]), label="train crops (smoothed)")
    if vals:
        axes[1].plot([r["step"] for r in vals], [r["val_psnr"] for r in vals], "o-", label="val, full images")
        axes[2].plot([r["step"] for r in vals], [r["val_n"] for r in vals], "o-")
    axes[0].set(title="loss", xlabel="step")
    axes[1].set(title="PSNR of the network's Gaussians (dB)", xlabel="step")
    axes[1].legend()
    axes[2].set(title="Gaussians per val image", xlabel="step")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
