"""The codec against JPEG at a fixed number of iterations: how far a longer encode goes.

    python benchmarks/codec_iterations.py                  # 0.15 bpp, 600 and 3,000 iterations, 24 Kodak images
    python benchmarks/codec_iterations.py --iters 3000 --shard 0/2 & ... --shard 1/2    # side by side
    python benchmarks/codec_iterations.py --summary-only   # figures/codec_iterations.json from what is on disk

``benchmarks/codec.py`` encodes within wall-clock budgets (2.5 and 12.5 s on a shared core: a few hundred
iterations), which is what its time target needs. This study fixes the iterations instead (70 % float fit, 30 %
quantisation-aware), which no machine load can change, and asks the first target of the compression issue
directly: does gilab beat JPEG in PSNR at <= 0.3 bpp on the Kodak mean? The net start only, one rate.

JPEG (libjpeg, optimised Huffman tables) is encoded per image at the highest quality whose file is no larger than
gilab's (quality 1 where none is), and at the next quality up (a file larger than gilab's): gilab's PSNR against
both brackets the comparison, and JPEG's PSNR at exactly gilab's rate is interpolated linearly between them. Scores as in ``benchmarks/codec.py``: the decoded image rounded to 8 bits.
Per-image results go to ``--cache``/iters_K.jsonl, one line per image (a rerun skips finished images); the JPEG
rows are computed in the summary (deterministic, milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from codec import CACHE, FIGURES, PILLOW, machine, matched_quality, mean, pillow_row, scores

RATE = 0.15
ITERS = (600, 3000)


def encode_image(path: Path, iters: int, rate: float, generator) -> dict:
    """gilab's net start on one image at ``iters`` iterations: rate, scores, times."""
    from gilab import codec
    from gilab.io import load_image

    image = load_image(path)
    r = codec.compress(image, bpp=rate, init="net", iters=iters, generator=generator)
    return {"image": path.stem, "iters": iters, "target_bpp": rate, "n": r.n, "bpp": r.bpp, **scores(r.image, image),
            "psnr_before_quantisation": r.float_psnr, "encode_s": r.seconds, "iterations": list(r.iterations),
            "load_average": os.getloadavg()[0]}


def jpeg_bracket(path: Path, bpp: float) -> dict:
    """JPEG at the highest quality no larger than ``bpp`` ("below") and at the next quality ("above")."""
    from gilab.io import load_image

    image = load_image(path)
    quality = matched_quality(image, "JPEG", bpp)
    below = pillow_row(image, "JPEG", quality)
    above = pillow_row(image, "JPEG", min(quality + 1, PILLOW["JPEG"][3][1]))
    return {"below": below, "above": above}


def jpeg_at(bracket: dict, bpp: float, key: str) -> float:
    """JPEG's ``key`` (psnr, ms_ssim) at exactly ``bpp``: linear in the rate between the bracket's two files (the
    lower file's value where JPEG's lowest quality is already above ``bpp``)."""
    below, above = bracket["below"], bracket["above"]
    if below["bpp"] >= bpp or above["bpp"] <= below["bpp"]:
        return below[key]
    share = (bpp - below["bpp"]) / (above["bpp"] - below["bpp"])
    return below[key] + share * (above[key] - below[key])


def summarise(cache: Path, paths: dict[str, Path]) -> dict:
    rows = {}
    for file in sorted(cache.glob("iters_*.jsonl")):
        records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        for record in records:
            record["jpeg"] = jpeg_bracket(paths[record["image"]], record["bpp"])
            record["jpeg"]["at_gilab_rate"] = {key: jpeg_at(record["jpeg"], record["bpp"], key)
                                               for key in ("psnr", "ms_ssim")}
        jpeg = lambda side, key, records=records: mean(r["jpeg"][side][key] for r in records)
        rows[file.stem] = {
            "images": len(records), "iters": records[0]["iters"], "target_bpp": records[0]["target_bpp"],
            # the generator's weights (sha256 of the file, first 16 hex): one per run, or the run mixed weights
            "generator": sorted({r.get("generator", "not recorded") for r in records}),
            "gilab": {key: mean(r[key] for r in records)
                      for key in ("bpp", "psnr", "ms_ssim", "psnr_before_quantisation", "encode_s")},
            "jpeg_below": {key: jpeg("below", key) for key in ("bpp", "psnr", "ms_ssim")},
            "jpeg_above": {key: jpeg("above", key) for key in ("bpp", "psnr", "ms_ssim")},
            "jpeg_at_gilab_rate": {key: jpeg("at_gilab_rate", key) for key in ("psnr", "ms_ssim")},
            "gilab_wins_in_psnr_at_equal_rate": sum(r["psnr"] > r["jpeg"]["at_gilab_rate"]["psnr"] for r in records),
            "gilab_wins_in_psnr_over_jpeg_below": sum(r["psnr"] > r["jpeg"]["below"]["psnr"] for r in records),
            "gilab_wins_in_psnr_over_jpeg_above": sum(r["psnr"] > r["jpeg"]["above"]["psnr"] for r in records),
            "per_image": records}
    return rows


def table(rows: dict) -> str:
    lines = [("| iterations | images | gilab bpp | gilab PSNR | gilab MS-SSIM | before quantisation | encode (s) "
              "| JPEG below: bpp / PSNR | JPEG above: bpp / PSNR | JPEG at gilab's rate: PSNR / MS-SSIM "
             "| gilab ahead of below / at equal rate / above |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows.values():
        g, lo, hi, eq = row["gilab"], row["jpeg_below"], row["jpeg_above"], row["jpeg_at_gilab_rate"]
        lines.append(f"| {row['iters']:,} | {row['images']} | {g['bpp']:.3f} | {g['psnr']:.2f} | {g['ms_ssim']:.4f} "
                     f"| {g['psnr_before_quantisation']:.2f} | {g['encode_s']:.0f} | {lo['bpp']:.3f} / {lo['psnr']:.2f} "
                     f"| {hi['bpp']:.3f} / {hi['psnr']:.2f} | {eq['psnr']:.2f} / {eq['ms_ssim']:.4f} "
                     f"| {row['gilab_wins_in_psnr_over_jpeg_below']} / {row['gilab_wins_in_psnr_at_equal_rate']} / "
                     f"{row['gilab_wins_in_psnr_over_jpeg_above']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, nargs="+", default=list(ITERS))
    parser.add_argument("--rate", type=float, default=RATE, help="target bpp")
    parser.add_argument("--shard", default="0/1", help="i/n: this process takes images i, i+n, ...")
    parser.add_argument("--cache", type=Path, default=CACHE / "iterations")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # one core per process: shards run side by side
    torch.set_num_threads(1)
    from gilab import datasets
    from gilab.files import parse_shard

    paths = {p.stem: p for p in datasets.kodak()}
    if not args.summary_only:
        from gilab.generator import Generator

        index, count = parse_shard(args.shard)
        from gilab.study.protocol import weights_fingerprint

        generator, fingerprint = Generator.from_pretrained(), weights_fingerprint()
        args.cache.mkdir(parents=True, exist_ok=True)
        for iters in args.iters:
            out = args.cache / f"iters_{iters}.jsonl"
            done = {json.loads(line)["image"] for line in out.read_text().splitlines()} if out.exists() else set()
            for path in list(paths.values())[index::count]:
                if path.stem in done:
                    continue
                tic = time.perf_counter()
                record = encode_image(path, iters, args.rate, generator) | {"generator": fingerprint}
                with out.open("a") as f:  # one whole line per image: an interrupted run loses that image only
                    f.write(json.dumps(record) + "\n")
                print(f"{path.stem} {iters}: {record['bpp']:.3f} bpp, {record['psnr']:.2f} dB "
                      f"({time.perf_counter() - tic:.0f} s)", flush=True)
    rows = summarise(args.cache, paths)
    summary = {"rows": rows, "machine": machine(), "note": __doc__.split("\n\n")[1]}
    args.figures.mkdir(parents=True, exist_ok=True)
    (args.figures / "codec_iterations.json").write_text(json.dumps(summary, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
