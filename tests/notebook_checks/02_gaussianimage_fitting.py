# Run in the kernel after notebooks/02_gaussianimage_fitting.ipynb (fast mode): what it must have achieved.
assert all(r.iterations == ITERS for r in [*fits.values(), *by_n.values(), *by_param.values()])
assert fits[1e-2].psnr > fits[1e-3].psnr, {lr: r.psnr for lr, r in fits.items()}
assert by_n[300].psnr > by_n[100].psnr, {n: r.psnr for n, r in by_n.items()}
assert final.iterations == 100 and not monitor.stopped and not monitor.running
assert final.psnr > final.history.psnr[0] + 8 and monitor.updates >= 1
