"""Properties of the masking that hold for any window, threshold, ratio and volume (hypothesis).

Expected values are computed independently, in numpy, from the definition: a subvolume is foreground
when the mean of clip((x - lo) / (hi - lo), 0, 1) over its voxels is >= the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunet_subfore.masking import ForegroundMasker, foreground_subvolumes

S = 4  # small subvolumes keep the examples fast; the math does not depend on the side

volumes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31 - 1))
windows = st.tuples(st.floats(-1200, 300), st.floats(1, 1500)).map(lambda lw: (lw[0], lw[0] + lw[1]))


def make_volume(spec) -> torch.Tensor:
    b, nd, nh, nw, seed = spec
    rng = np.random.default_rng(seed)
    # blocks of uniform tissue, air or a mixture, plus noise: every verdict occurs
    base = rng.choice([-1000.0, -400.0, -100.0, 40.0, 300.0], size=(b, 1, nd, nh, nw))
    x = np.repeat(np.repeat(np.repeat(base, S, 2), S, 3), S, 4) + rng.normal(0, 80, (b, 1, nd * S, nh * S, nw * S))
    return torch.from_numpy(x.astype(np.float32))


def reference_foreground(x: np.ndarray, window, threshold) -> np.ndarray:
    lo, hi = window
    u = np.clip((x[:, 0].astype(np.float64) - lo) / (hi - lo), 0, 1)
    b, d, h, w = u.shape
    means = u.reshape(b, d // S, S, h // S, S, w // S, S).mean(axis=(2, 4, 6))
    return means >= threshold


@settings(max_examples=60, deadline=None)
@given(volumes, windows, st.floats(0, 1))
def test_criterion_is_the_mean_of_the_clipped_window(spec, window, threshold):
    x = make_volume(spec)
    expected = reference_foreground(x.numpy(), window, threshold)
    got = foreground_subvolumes(x, S, window, threshold).numpy()
    # float32 block sums against a float64 mean: only blocks within rounding of the threshold may differ
    lo, hi = window
    u = np.clip((x.numpy()[:, 0].astype(np.float64) - lo) / (hi - lo), 0, 1)
    b, d, h, w = u.shape
    means = u.reshape(b, d // S, S, h // S, S, w // S, S).mean(axis=(2, 4, 6))
    borderline = np.abs(means - threshold) < 1e-5
    assert np.array_equal(got[~borderline], expected[~borderline])


@settings(max_examples=60, deadline=None)
@given(volumes, windows, st.floats(0, 1), st.floats(0, 1), st.sampled_from(["bernoulli", "exact"]),
       st.sampled_from(["noise", "zero"]), st.integers(0, 1000))
def test_background_is_never_masked_and_unmasked_voxels_are_untouched(spec, window, threshold, ratio, selection,
                                                                     fill, seed):
    x = make_volume(spec)
    out = ForegroundMasker(S, window, threshold, ratio, selection, fill)(x, generator=torch.Generator().manual_seed(seed))
    assert not (out.subvolume_mask & ~out.foreground).any()
    keep = ~out.voxel_mask.expand_as(x)
    assert torch.equal(out.masked[keep], x[keep])
    if selection == "exact":
        n_foreground = out.foreground.flatten(1).sum(1).double()
        assert torch.equal(out.subvolume_mask.flatten(1).sum(1), torch.round(n_foreground * ratio).long())
    if fill == "zero":
        assert (out.masked[~keep] == 0).all()
