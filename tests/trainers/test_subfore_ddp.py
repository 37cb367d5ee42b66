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

import datetime
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_subfore.losses import MaskedL1Loss
from nnunet_subfore.rank_masking import mask_generator
from nnunet_subfore.recipe import PLANS_MASKING_KEY
from nnunet_subfore.trainers import subfore_mim
from nnunet_subfore.trainers.subfore_mim_logging import MIMLocalLogger
from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer

MEAN, STD = -140.0, 260.0  # foreground statistics of body-labelled CT, in HU
PATCH = 32
STEPS = 2  # training iterations per epoch (and validation iterations)
WORLD = 2


def plans() -> dict:
    return {
        "plans_name": "nnUNetPlans",
        "dataset_name": "Dataset999_Test",
        "configurations": {"3d_fullres": {"normalization_schemes": ["CTNormalization"], "patch_size": [PATCH] * 3}},
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": MEAN, "std": STD, "percentile_00_5": -980.0, "percentile_99_5": 1200.0}},
        PLANS_MASKING_KEY: {"subvolume_size": 8},
    }


class TinyNet(torch.nn.Module):
    """Two convolutions and a buffer (a DDP forward with buffers on one rank alone would wait for the other)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv3d(4, 1, 1)
        self.register_buffer("offset", torch.zeros(1))

    def forward(self, x):
        x = x.to(self.conv1.weight.dtype)  # perform_actual_validation's crops are float32
        return self.conv2(torch.relu(self.conv1(x))) + self.offset


def tiny_net() -> TinyNet:
    """In float64, so that the network's sums over the union and over the ranks agree to rounding (the trainer
    computes the loss in float32, as the reference does)."""
    torch.manual_seed(0)
    return TinyNet().double()


def batch(seed: int, air_share: float, texture: float = 30.0) -> torch.Tensor:
    """Two patches of soft tissue with a texture of ``texture`` HU (in the plans' normalized units), the first
    ``air_share`` of each patch's depth air (never masked)."""
    g = torch.Generator().manual_seed(seed)
    hu = 40.0 + texture * torch.randn(2, 1, PATCH, PATCH, PATCH, generator=g)
    hu[:, :, : int(air_share * PATCH)] = -1000.0
    return ((hu - MEAN) / STD).double()


def train_batches(rank: int):
    """Step 0: the same batch on both ranks (different masks can only come from the generators); step 1: rank 1
    mostly air and coarser, so the ranks mask very different voxel counts with different errors (a mean of
    means would be wrong)."""
    return [batch(100, 0.0), batch(200 + rank, 0.75, 400.0) if rank else batch(200, 0.0)]


def val_batches(rank: int):
    return [batch(300 + rank, 0.5 if rank else 0.0), batch(400 + rank, 0.0)]


class RecordingMasker:
    """The trainer's masker, keeping what it drew (the harness reads the masks; the trainer is unaware)."""

    def __init__(self, masker):
        self.masker, self.drawn = masker, []

    def __call__(self, x, generator=None):
        out = self.masker(x, generator=generator)
        self.drawn.append((out.masked.clone(), out.subvolume_mask.clone()))
        return out


def bare_trainer(rank: int, folder: Path, ddp: bool = True) -> SubForePretrainTrainer:
    """The trainer with the attributes nnU-Net's __init__ and initialize would set (on CPU, network DDP-wrapped)."""
    t = SubForePretrainTrainer.__new__(SubForePretrainTrainer)
    t.plans_manager = PlansManager(plans())
    t.configuration_name, t.fold, t.device = "3d_fullres", 0, torch.device("cpu")
    t.configuration_manager = SimpleNamespace(patch_size=[PATCH] * 3)  # all that is read of it here
    t.is_ddp, t.local_rank, t.current_epoch, t.num_epochs = ddp, rank, 0, 10
    t.num_iterations_per_epoch = t.num_val_iterations_per_epoch = STEPS
    t.output_folder, t.log_file = str(folder), str(folder / "training_log.txt")
    t.masking, t.masking_settings = t.recipe_for_plans(t.plans_manager.plans)
    t.print_to_log_file(t.masking_log_line())  # nnU-Net's own: rank 0 writes the log file
    t.masker = RecordingMasker(t.build_masker())
    net = tiny_net()
    t.network = torch.nn.parallel.DistributedDataParallel(net) if ddp else net
    t.optimizer = torch.optim.SGD(t.network.parameters(), lr=0.1)
    t.lr_scheduler = PolyLRScheduler(t.optimizer, 0.1, t.num_epochs)
    t.grad_scaler, t.loss = None, MaskedL1Loss()
    t.logger = MetaLogger(str(folder), False)
    t.logger.local_logger = MIMLocalLogger()
    t.disable_checkpointing, t._best_ema, t.my_init_kwargs = False, None, {}
    t.inference_allowed_mirroring_axes, t.save_every, t.checkpoint_minutes = None, 1, 30.0
    t._last_latest_checkpoint = 0.0
    return t


class OneCaseDataset:
    """What perform_actual_validation reads of nnU-Net's dataset class: one case."""

    def __init__(self, folder, keys):
        pass

    def load_case(self, key):
        return batch(500, 0.25)[0].numpy(), None, None, None


def stub_fingerprint_inputs(trainer) -> None:
    """record_pretraining_fingerprints without a raw dataset: the fingerprinting itself is tested elsewhere."""
    subfore_mim.raw_dataset_folder = lambda root, name: Path("raw")
    subfore_mim.dataset_cases = lambda raw: {"case0": []}
    subfore_mim.fingerprint_cases = lambda cases: {"case0": ["0" * 64]}
    trainer.do_split = lambda: (["case0"], ["case1"])
    trainer.dataset_class, trainer.preprocessed_dataset_folder = OneCaseDataset, "unused"


def run_rank(t: SubForePretrainTrainer) -> dict:
    """One epoch as nnU-Net's run_training runs it, then what a run does at its end; returns what the test reads."""
    rank = t.local_rank
    t.on_epoch_start()
    t.on_train_epoch_start()
    states, outputs = [], []
    for data in train_batches(rank):
        states.append({k: v.clone() for k, v in t.plain_network.state_dict().items()})
        outputs.append(t.train_step({"data": data}))
        if not states[1:]:
            grads = [p.grad.clone() for p in t.plain_network.parameters()]
    t.on_train_epoch_end(outputs)
    train_masks = t.masker.drawn[:STEPS]
    t.perform_actual_validation()  # rank 0 alone, right after a training forward
    torch.distributed.barrier()
    val_state = {k: v.clone() for k, v in t.plain_network.state_dict().items()}
    with torch.no_grad():
        t.on_validation_epoch_start()
        val_outputs = [t.validation_step({"data": data}) for data in val_batches(rank)]
        t.on_validation_epoch_end(val_outputs)
    t.on_epoch_end()
    torch.distributed.barrier()
    return {"states": states, "grads": grads, "losses": [float(o["loss"]) for o in outputs],
            "train_masks": train_masks, "val_masks": t.masker.drawn[-STEPS:], "val_state": val_state,
            "train_loss": t.logger.get_value("train_losses", step=-1),
            "val_loss": t.logger.get_value("val_losses", step=-1)}


def worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=30))
    try:
        results = []
        for run in ("first", "second"):  # a rerun with the same seed, in processes whose default generator moved on
            folder = Path(out) / run / f"rank{rank}"
            folder.mkdir(parents=True)
            t = bare_trainer(rank, folder)
            stub_fingerprint_inputs(t)
            t.record_pretraining_fingerprints()
            results.append(run_rank(t))
            results[-1]["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


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
