"""The two-process pretraining harness of tests/trainers/test_subfore_ddp.py, in a module of its own.

``torch.multiprocessing.spawn`` starts fresh interpreters that import ``worker`` by its module name; a test
module imported by pytest's ``--import-mode=importlib`` has a name no other process can import, so the worker
and what it calls live here (``tests/`` is on ``sys.path``: pyproject's ``pythonpath``, inherited by spawned
processes).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace

import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_subfore.losses import MaskedL1Loss
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
    subfore_mim.fingerprint_cases = lambda cases, **kwargs: {"case0": ["0" * 64]}
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
