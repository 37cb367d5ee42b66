"""Benchmark-local trainer variants (not part of the package; put this folder on nnUNet_extTrainer).

The ``SubForeBench_CNN_*`` classes are the CNN arm: the package's CNN demo trainers on a tiny-CNN plans
preset (``nnunet-subfore plans --tiny-cnn``), same variables. All three CNN fine-tuning arms use the stock nnUNetTrainer's recipe
(SGD lr 1e-2, poly, deep supervision), so they differ only in the initial weights.

``benchmarks/pretraining_payoff.py`` and ``benchmarks/loader.py`` append this folder to
``nnUNet_extTrainer`` (os.pathsep-separated) next to ``nnunet-subfore trainer-path``. The classes are
the package's demo-scale trainers (tiny SwinUNETR, 32^3 patches, no test-time mirroring) with the
run length, the masking subvolume size and a seed taken from environment variables, so that one
class serves every benchmark setting and seeds are reproducible:

    SUBFORE_BENCH_SEED        seeds python, numpy and torch before nnU-Net builds anything
    SUBFORE_BENCH_EPOCHS      epochs (nnU-Net's num_epochs)
    SUBFORE_BENCH_ITERS       training iterations per epoch
    SUBFORE_BENCH_VAL_ITERS   validation iterations per epoch
    SUBFORE_BENCH_THREADS     torch intra-op threads (nnUNetv2_train -device cpu sets os.cpu_count(),
                              which oversubscribes the cores when several runs share them)

The masking settings (subvolume size, ratio, ...) come from the plans' ``subfore_masking`` entry
(``nnunet-subfore plans --subvolume-size 8 ...``), which the pretraining trainers read. (An earlier
``SUBFORE_BENCH_SUBVOLUME`` variable never took effect: the trainer rebuilt its recipe from the plans
after it was set, so the runs of the removed ``pretrain_vs_scratch.py`` masked 16^3 subvolumes, not the 8^3 its
docs said.)

They are read at training time only; inference (``nnUNetv2_predict``) rebuilds the network from the
class's architecture and the saved plans, which these variables do not touch.
"""

import os
import random

import numpy as np
import torch

from nnunet_subfore.trainers.subfore_variants import (
    SubForeCNNFinetuneTrainer_demo,
    SubForeCNNPretrainTrainer_demo,
    SubForeCNNTrainer_demo,
    SubForeCNNTrainer_demo_scratch,
    SubForeRandomMaskCNNPretrainTrainer_demo,
)
from nnunet_subfore.trainers.subfore_variants import (
    SubForePretrainTrainer_demo,
    SubForeRandomMaskPretrainTrainer_demo,
    SubForeSwinUNETRTrainer_demo,
)


def _env_int(name):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


class _BenchSettings:
    """Reads the SUBFORE_BENCH_* variables before the SubFore base class applies them."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        threads = _env_int("SUBFORE_BENCH_THREADS")
        if threads:
            torch.set_num_threads(threads)
        seed = _env_int("SUBFORE_BENCH_SEED")
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        for attr, var in (("epochs", "SUBFORE_BENCH_EPOCHS"), ("iterations_per_epoch", "SUBFORE_BENCH_ITERS"),
                          ("val_iterations_per_epoch", "SUBFORE_BENCH_VAL_ITERS")):
            value = _env_int(var)
            if value is not None:
                setattr(self, attr, value)
        super().__init__(plans, configuration, fold, dataset_json, device)


class SubForeBench_PretrainFG(_BenchSettings, SubForePretrainTrainer_demo):
    """HU-foreground masking pretraining, tiny SwinUNETR, 32^3."""


class SubForeBench_PretrainRandom(_BenchSettings, SubForeRandomMaskPretrainTrainer_demo):
    """Random subvolume masking pretraining (same ratio), tiny SwinUNETR, 32^3."""


class SubForeBench_Finetune_fg(_BenchSettings, SubForeSwinUNETRTrainer_demo):
    """Fine-tuning from SubForeBench_PretrainFG weights."""


class SubForeBench_Finetune_random(_BenchSettings, SubForeSwinUNETRTrainer_demo):
    """Fine-tuning from SubForeBench_PretrainRandom weights."""


class SubForeBench_Finetune_scratch(_BenchSettings, SubForeSwinUNETRTrainer_demo):
    """The same fine-tuning without pretrained weights."""


class SubForeBench_CNN_PretrainFG(_BenchSettings, SubForeCNNPretrainTrainer_demo):
    """HU-foreground masking pretraining of the tiny-CNN preset's U-Net (SGD 1e-2, poly)."""


class SubForeBench_CNN_PretrainRandom(_BenchSettings, SubForeRandomMaskCNNPretrainTrainer_demo):
    """Random subvolume masking pretraining (same ratio), same network and budget."""


class SubForeBench_CNN_Finetune_fg(_BenchSettings, SubForeCNNTrainer_demo):
    """Fine-tuning from SubForeBench_CNN_PretrainFG weights with the stock nnUNetTrainer's recipe (SGD 1e-2, poly)."""


class SubForeBench_CNN_Finetune_random(_BenchSettings, SubForeCNNTrainer_demo):
    """Fine-tuning from SubForeBench_CNN_PretrainRandom weights, same recipe."""


class SubForeBench_CNN_Finetune_scratch(_BenchSettings, SubForeCNNTrainer_demo_scratch):
    """From scratch, same recipe: the arms differ only in the initial weights."""


class SubForeBench_CNN_FinetuneWarmup(_BenchSettings, SubForeCNNFinetuneTrainer_demo):
    """Fine-tuning with the package's warm-up recipe (SubForeCNNFinetuneTrainer), same network and length."""
