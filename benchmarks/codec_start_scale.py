"""The network's start at codec-sized N: a density gain (today) against the image seen at a smaller scale.

    GILAB_DATA=/work/shared/data python benchmarks/codec_start_scale.py [--out figures/codec_start_scale.json]

The compression codec asks the generator for 1,000-6,000 Gaussians on a Kodak image, about 1/10 to 1/40 of the
count it places by itself (and was trained at). Today the count is reached by a gain on the position map
(``target_count``: the density is searched), so the fields see a density they never saw in training. The other
way: show the network the image downscaled (area) by 2, 4 or 8, where its own count at density near 1 is close
to the one asked for, then zoom the Gaussians back up (``Gaussians2D.scaled``) and take the colour step at full
size. Per image and count: the start's PSNR and the time of each way (the network runs on 1/4 to 1/64 of the
pixels). Five Kodak images (those of the codec's tuning runs) at the three counts of ``figures/README.md``,
"Compression at fixed iterations".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

IMAGES = ("kodim01", "kodim05", "kodim15", "kodim20", "kodim23")
COUNTS = (1150, 2600, 5700)


def measure(gen, image, n: int, own: int) -> dict:
    import gilab
    from gilab.metrics import psnr
    from gilab.starts import zoomed_net_start

    height, width = image.shape[-2:]

    def score(g):
        return round(psnr(gilab.render(g, height, width).clamp(0, 1), image).item(), 3)

    tic = time.perf_counter()
    gained = gen(image, target_count=n)
    gained_s = time.perf_counter() - tic
    tic = time.perf_counter()
    zoomed, factor = zoomed_net_start(gen, image, n, own)
    zoomed_s = time.perf_counter() - tic
    return {"n_asked": n, "density_gain": {"n": len(gained), "psnr": score(gained), "seconds": round(gained_s, 3)},
            "zoomed": {"n": len(zoomed), "factor": factor, "psnr": score(zoomed), "seconds": round(zoomed_s, 3)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("figures/codec_start_scale.json"))
    args = p.parse_args(argv)
    data = Path(os.environ.get("GILAB_DATA", "data"))
    paths = [data / "kodak" / f"{name}.png" for name in IMAGES]
    if not all(path.exists() for path in paths):
        print(f"{data / 'kodak'}: needs {', '.join(IMAGES)} (set GILAB_DATA, or gilab download kodak)",
              file=sys.stderr)
        return 2

    import torch

    from gilab.generator import Generator
    from gilab.io import load_image
    from gilab.machine import cpu_name
    from gilab.study.protocol import weights_fingerprint

    gen = Generator.from_pretrained().eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            image = load_image(path)
            own = len(gen(image))
            for n in COUNTS:
                row = {"image": path.stem, "own_n": own, **measure(gen, image, n, own)}
                rows.append(row)
                print(f"{path.stem} N {n}: density gain {row['density_gain']['psnr']:.2f} dB, image at "
                      f"1/{row['zoomed']['factor']} {row['zoomed']['psnr']:.2f} dB", flush=True)
    summary = {}
    for n in COUNTS:
        at = [r for r in rows if r["n_asked"] == n]
        summary[str(n)] = {way: {"psnr": round(statistics.mean(r[way]["psnr"] for r in at), 2),
                                 "seconds": round(statistics.median(r[way]["seconds"] for r in at), 2)}
                           for way in ("density_gain", "zoomed")}
        summary[str(n)]["zoomed_better_on"] = sum(r["zoomed"]["psnr"] > r["density_gain"]["psnr"] for r in at)
        print(f"N {n}: mean {summary[str(n)]['density_gain']['psnr']:.2f} dB with a density gain, "
              f"{summary[str(n)]['zoomed']['psnr']:.2f} dB zoomed ({summary[str(n)]['zoomed_better_on']} of "
              f"{len(at)} better)")
    out = {"benchmark": __doc__.split("\n")[0], "weights_sha256": weights_fingerprint(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())},
           "summary": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
