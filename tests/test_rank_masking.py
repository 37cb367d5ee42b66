"""The pure parts of multi-process pretraining: mask seeds per rank and step, the union mean of per-rank losses.

The two-process behaviour (gloo) is tested through the trainer in tests/trainers/test_subfore_ddp.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from nnunet_subfore.losses import masked_l1_loss, masked_voxel_count, subvolume_masked_l1_loss
from nnunet_subfore.masking import expand_subvolume_mask
from nnunet_subfore.rank_masking import mask_generator, mask_stream_seed, union_mean_scale, union_means


def test_seeds_differ_between_ranks_and_steps_and_fit_torch():
    seeds = {mask_stream_seed(base, rank, step) for base in range(3) for rank in range(8) for step in range(100)}
    assert len(seeds) == 3 * 8 * 100
    assert all(0 <= s < 2 ** 63 for s in seeds)
    assert mask_stream_seed(0, 1, 2) != mask_stream_seed(0, 2, 1)  # not a function of rank + step


def test_seeds_are_the_same_in_another_python_process():
    """No salted hash: a resumed run in a new process continues the same streams."""
    code = "from nnunet_subfore.rank_masking import mask_stream_seed; print(mask_stream_seed(7, 3, 12345))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == mask_stream_seed(7, 3, 12345)


def test_a_generator_reproduces_its_draws():
    a, b = mask_generator(0, 1, 5, torch.device("cpu")), mask_generator(0, 1, 5, torch.device("cpu"))
    assert torch.equal(torch.rand(10, generator=a), torch.rand(10, generator=b))
    assert not torch.equal(torch.rand(10, generator=mask_generator(0, 0, 5, "cpu")),
                           torch.rand(10, generator=mask_generator(0, 1, 5, "cpu")))


@pytest.mark.parametrize("bad", [-1, 2 ** 63, 1.5, True, "3"])
def test_seed_inputs_must_be_non_negative_integers(bad):
    with pytest.raises(ValueError, match="must be an integer"):
        mask_stream_seed(0, bad, 0)


def test_the_scale_is_one_outside_a_process_group():
    assert float(union_mean_scale(torch.tensor(17))) == 1.0
    assert float(union_mean_scale(torch.tensor(0))) == 1.0


def test_union_means_weight_each_rank_by_its_count():
    losses = [[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]
    counts = [[1, 0, 0], [3, 2, 0]]
    np.testing.assert_allclose(union_means(losses, counts), [(1 + 9) / 4, 4.0, 0.0])
    np.testing.assert_allclose(union_means([[1.0, 2.0]], [[5, 1]]), [1.0, 2.0])  # one rank: its losses
    with pytest.raises(ValueError, match="ranks, steps"):
        union_means([1.0, 2.0], [1, 2])


def test_the_masked_voxel_count_is_what_the_loss_averages_over():
    g = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 3, 8, 8, 16, generator=g), torch.randn(2, 3, 8, 8, 16, generator=g)
    sub = torch.rand(2, 2, 2, 4, generator=g) < 0.5  # 4^3 subvolumes
    count = masked_voxel_count(prediction, sub)
    voxel_mask = expand_subvolume_mask(sub, 4)
    assert int(count) == int(voxel_mask.sum()) * 3
    total = (prediction - target).abs()[voxel_mask.expand_as(prediction)].sum()
    torch.testing.assert_close(subvolume_masked_l1_loss(prediction, target, sub) * count, total)
    torch.testing.assert_close(masked_l1_loss(prediction, target, voxel_mask) * count, total)
