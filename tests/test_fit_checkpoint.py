"""fit(checkpoint=...): a fit stopped part-way continues from its file along the same trajectory, for the fused and
the autograd step and both parametrisations; a file of another fit, or a damaged one, is refused in one line."""

import itertools

import pytest
import torch
from test_fit import smooth_image

import gilab
from gilab.errors import GilabError

STEPS, STOP = 40, 25


def stop_at(iteration):
    def callback(state):
        if state.iteration == iteration:
            raise KeyboardInterrupt  # what Ctrl-C does mid-fit

    return callback


@pytest.mark.parametrize("backend, param", [("cpu", "cholesky"), ("cpu", "rs"), ("torch", "cholesky"), ("torch", "rs")])
def test_a_stopped_fit_resumes_on_the_same_trajectory(tmp_path, backend, param):
    image, path = smooth_image(), tmp_path / "fit.ckpt"
    options = {"n": 40, "iters": STEPS, "param": param, "backend": backend, "lr": 1e-2, "lr_step": 30,
               "progress": False}  # lr_step 30: the schedule's halving falls after the resume point
    whole = gilab.fit(image, **options)
    cut = gilab.fit(image, **options, checkpoint=path, checkpoint_every=0, callback=stop_at(STOP), callback_every=1)
    assert cut.interrupted and cut.iterations == STOP and path.exists()
    resumed = gilab.fit(image, **options, checkpoint=path)
    assert resumed.fused == whole.fused == (backend == "cpu")
    assert resumed.iterations == STEPS and resumed.history.iteration == list(range(STEPS + 1))
    assert not path.exists()  # finished: nothing left to resume
    for name in ("means", "colors"):
        torch.testing.assert_close(getattr(resumed.gaussians, name), getattr(whole.gaussians, name),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(resumed.history.psnr), torch.tensor(whole.history.psnr),
                               rtol=1e-4, atol=1e-4)
    times = resumed.history.seconds
    assert all(a <= b for a, b in itertools.pairwise(times))  # the clock goes on from the saved fit's


def test_without_the_saved_optimiser_the_trajectory_would_differ(tmp_path):
    # The test above could not pass by accident: restarting Adan at the stop point leaves another trajectory.
    image = smooth_image()
    options = {"n": 40, "param": "cholesky", "backend": "cpu", "lr": 1e-2, "progress": False}
    whole = gilab.fit(image, iters=STEPS, **options)
    first = gilab.fit(image, iters=STOP, **options)
    restarted = gilab.fit(image, init=first.gaussians, iters=STEPS - STOP, **options)
    assert (restarted.gaussians.means - whole.gaussians.means).abs().max() > 1e-3


def test_a_checkpoint_of_another_fit_or_a_damaged_one_is_refused(tmp_path):
    image, path = smooth_image(), tmp_path / "fit.ckpt"
    gilab.fit(image, n=40, iters=10, checkpoint=path, checkpoint_every=0, callback=stop_at(5), callback_every=1,
              progress=False)
    with pytest.raises(GilabError, match=r"checkpoint of another fit \(n 40 there, 50 here\)"):
        gilab.fit(image, n=50, iters=10, checkpoint=path, progress=False)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GilabError, match="not a readable fit checkpoint"):
        gilab.fit(image, n=40, iters=10, checkpoint=path, progress=False)
