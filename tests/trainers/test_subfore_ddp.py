"""Multi-GPU pretraining, on two CPU processes: per-rank mask streams, the union-mean loss, one writer.

nnU-Net's DDP ``__init__`` puts a trainer on ``cuda:<rank>`` and ``initialize`` wraps the network with
``device_ids=[rank]``, neither of which runs on a CPU. Each of the two processes here (gloo, a file store)
makes the pretraining trainer without nnU-Net's ``__init__`` (as tests/trainers/test_subfore_pretrain.py
does), sets what ``__init__``/``initialize`` would set on a GPU (``is_ddp``, ``local_rank``, a DDP-wrapped
network, the trainer's own masker and loss, nnU-Net's logger with the trainer's local logger), and then runs
the trainer's own methods: ``on_train_epoch_start``, ``train_step``, ``on_train_epoch_end``, the validation
epoch, ``on_epoch_end`` (checkpoints, progress plot), ``record_pretraining_fingerprints`` and
``perform_actual_validation``. The reference is one process training on the union of the two ranks' batches
with the masks the ranks drew. What a GPU run must still confirm is in docs/workflow.md ("Multi-GPU
pretraining").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from subfore_ddp_harness import STEPS, WORLD, bare_trainer, tiny_net, train_batches, val_batches, worker

from nnunet_subfore.losses import MaskedL1Loss
from nnunet_subfore.rank_masking import mask_generator


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-rank run, twice with the same seed: (first, second), each a list of the ranks' results."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(folder / "store"), str(folder)), nprocs=WORLD, join=True)
    per_rank = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return [r[0] for r in per_rank], [r[1] for r in per_rank]


def union_step(state: dict, ranks_data, ranks_masks):
    """One process on the union of the ranks' batches, with the masks they drew: loss and gradients."""
    net = tiny_net()
    net.load_state_dict(state)
    masked = torch.cat([m for m, _ in ranks_masks])
    sub = torch.cat([s for _, s in ranks_masks])
    loss = MaskedL1Loss()(net(masked).float(), torch.cat(ranks_data).float(), sub)  # as the trainer computes it
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
    return loss.detach(), [p.grad for p in net.parameters()]


def test_the_ranks_draw_different_masks_and_a_rerun_the_same(runs):
    first, second = runs
    (masked0, sub0), (masked1, sub1) = first[0]["train_masks"][0], first[1]["train_masks"][0]
    # the same batch on both ranks at step 0: different masks and fills come from the per-rank generators
    assert not torch.equal(sub0, sub1) and not torch.equal(masked0, masked1)
    assert sub0.any() and sub1.any()
    for rank in range(WORLD):
        for (m_a, s_a), (m_b, s_b) in zip(first[rank]["train_masks"] + first[rank]["val_masks"],
                                           second[rank]["train_masks"] + second[rank]["val_masks"]):
            assert torch.equal(s_a, s_b) and torch.equal(m_a, m_b)


def test_the_loss_and_gradients_are_those_of_one_process_on_the_union(runs):
    ranks = runs[0]
    union_losses = []
    for step in range(STEPS):
        state = ranks[0]["states"][step]
        assert all(torch.equal(state[k], ranks[1]["states"][step][k]) for k in state)  # DDP kept them in step
        data = [train_batches(r)[step] for r in range(WORLD)]
        loss, grads = union_step(state, data, [ranks[r]["train_masks"][step] for r in range(WORLD)])
        union_losses.append(float(loss))
        # the mean of what the ranks return (and log) is the union's loss
        assert np.mean([ranks[r]["losses"][step] for r in range(WORLD)]) == pytest.approx(float(loss), rel=1e-6)
        if step == 0:
            for rank in range(WORLD):  # after DDP's all-reduce every rank holds the union's gradient
                for got, expected in zip(ranks[rank]["grads"], grads):
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    # step 1: rank 1 masked far fewer voxels, so a plain mean of the two ranks' means is far off
    net = tiny_net()
    net.load_state_dict(ranks[0]["states"][1])
    with torch.no_grad():
        own = [float(MaskedL1Loss()(net(ranks[r]["train_masks"][1][0]).float(), train_batches(r)[1].float(),
                                    ranks[r]["train_masks"][1][1])) for r in range(WORLD)]
    assert abs(np.mean(own) - union_losses[1]) > 0.02 * union_losses[1]
    for rank in range(WORLD):  # nnU-Net's on_train_epoch_end averages the scaled losses: the union's, per step
        assert ranks[rank]["train_loss"] == pytest.approx(np.mean(union_losses), rel=1e-6)


def test_the_validation_loss_is_the_mean_over_the_union(runs):
    ranks = runs[0]
    expected = []
    for step in range(STEPS):
        net = tiny_net()
        net.load_state_dict(ranks[0]["val_state"])
        net.eval()
        with torch.no_grad():
            masks = [ranks[r]["val_masks"][step] for r in range(WORLD)]
            loss = MaskedL1Loss()(net(torch.cat([m for m, _ in masks])).float(), torch.cat(
                [val_batches(r)[step] for r in range(WORLD)]).float(), torch.cat([s for _, s in masks]))
        expected.append(float(loss))
    for rank in range(WORLD):
        assert ranks[rank]["val_loss"] == pytest.approx(np.mean(expected), rel=1e-6)


def test_only_rank_0_writes(runs):
    ranks = runs[0]
    assert ranks[1]["files"] == []
    for name in ("checkpoint_best.pth", "checkpoint_latest.pth", "progress.png", "pretraining_fingerprints.json",
                 "training_log.txt", "validation/reconstruction_metrics.json"):
        assert name in ranks[0]["files"]


def test_a_resumed_run_continues_the_mask_streams(tmp_path):
    """--c at epoch 1 draws what the uninterrupted run drew in epoch 1 (one process, rank 1's stream)."""
    whole = bare_trainer(1, tmp_path, ddp=False)
    for epoch in range(2):
        whole.current_epoch = epoch
        whole.on_train_epoch_start()
        for data in train_batches(0):
            whole.train_step({"data": data})
    resumed = bare_trainer(1, tmp_path, ddp=False)
    resumed.current_epoch = 1  # what load_checkpoint restores
    resumed.on_train_epoch_start()
    for data in train_batches(0):
        resumed.train_step({"data": data})
    for (m_a, s_a), (m_b, s_b) in zip(whole.masker.drawn[STEPS:], resumed.masker.drawn):
        assert torch.equal(s_a, s_b) and torch.equal(m_a, m_b)
    # and those are the masks of global steps 2 and 3 of rank 1, not of rank 0 or of another base seed
    data = train_batches(0)[0]
    assert torch.equal(resumed.masker.drawn[0][1], resumed.masker.masker(data, mask_generator(0, 1, 2, "cpu")).subvolume_mask)
    assert not torch.equal(resumed.masker.drawn[0][1], resumed.masker.masker(data, mask_generator(0, 0, 2, "cpu")).subvolume_mask)
    assert not torch.equal(resumed.masker.drawn[0][1], resumed.masker.masker(data, mask_generator(1, 1, 2, "cpu")).subvolume_mask)
