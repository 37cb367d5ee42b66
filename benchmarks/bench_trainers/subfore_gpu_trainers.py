"""Short trainer variants for ``benchmarks/gpu_check.sh`` (not part of the package; put this folder on nnUNet_extTrainer).

``benchmarks/gpu_check.py`` appends this folder to ``nnUNet_extTrainer`` (os.pathsep-separated) after
``nnunet-subfore trainer-path``. The classes are the package's ``_demo`` trainers (tiny networks, 32^3
patches, no test-time mirroring) with the run length taken from environment variables, so that the
GPU check runs each of them for about 20 iterations and can resume one with more epochs:

    SUBFORE_GPU_EPOCHS      epochs (default 2)
    SUBFORE_GPU_ITERS       training iterations per epoch (default 10)
    SUBFORE_GPU_VAL_ITERS   validation iterations per epoch (default 2)

nnU-Net imports every module of an ``nnUNet_extTrainer`` folder while it looks for a trainer, and one
import error aborts the look-up for every trainer: this module therefore never raises at import.
``SubForeGPU_PretrainCNN`` exists only when the package has a ``SubForeCNNPretrainTrainer_demo``.
"""

import importlib
import os
import pkgutil

import torch

from nnunet_subfore.trainers.subfore_variants import (
    SubForePretrainTrainer_demo,
    SubForePretrainTrainer_UNETR_demo,
    SubForeRandomMaskPretrainTrainer_demo,
    SubForeSwinUNETRTrainer_demo,
)

_DEFAULTS = {"epochs": ("SUBFORE_GPU_EPOCHS", 2), "iterations_per_epoch": ("SUBFORE_GPU_ITERS", 10),
             "val_iterations_per_epoch": ("SUBFORE_GPU_VAL_ITERS", 2)}


class _GPUCheckLength:
    """Sets the run length from SUBFORE_GPU_* before the SubFore base class applies it (listed first)."""

    # nnU-Net records the constructor's arguments by name (inspect.signature): keep its signature
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        for attr, (var, default) in _DEFAULTS.items():
            value = os.environ.get(var, "")
            setattr(self, attr, int(value) if value.strip() else default)
        super().__init__(plans, configuration, fold, dataset_json, device)


class SubForeGPU_PretrainFG(_GPUCheckLength, SubForePretrainTrainer_demo):
    """HU-foreground MIM, tiny SwinUNETR, 32^3 (its checkpoint feeds SubForeGPU_Finetune)."""


class SubForeGPU_PretrainFGCompile(_GPUCheckLength, SubForePretrainTrainer_demo):
    """The same, run with nnU-Net's default torch.compile on CUDA (own result folder)."""


class SubForeGPU_PretrainUNETR(_GPUCheckLength, SubForePretrainTrainer_UNETR_demo):
    """HU-foreground MIM, tiny UNETR, 32^3 (resumed with --c by the GPU check)."""


class SubForeGPU_PretrainRandom(_GPUCheckLength, SubForeRandomMaskPretrainTrainer_demo):
    """Random subvolume masking at the same ratio, tiny SwinUNETR, 32^3."""


class SubForeGPU_Finetune(_GPUCheckLength, SubForeSwinUNETRTrainer_demo):
    """Fine-tuning (tiny SwinUNETR) from SubForeGPU_PretrainFG weights."""


def _find_package_trainer(name):
    """A class of the installed ``nnunet_subfore.trainers`` by name, or None (never raises)."""
    try:
        package = importlib.import_module("nnunet_subfore.trainers")
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"nnunet_subfore.trainers.{info.name}")
            if isinstance(getattr(module, name, None), type):
                return getattr(module, name)
    except Exception:  # noqa: BLE001 - an import error here must not abort nnU-Net's trainer look-up
        return None
    return None


_CNN_DEMO = _find_package_trainer("SubForeCNNPretrainTrainer_demo")
if _CNN_DEMO is not None:
    class SubForeGPU_PretrainCNN(_GPUCheckLength, _CNN_DEMO):
        """HU-foreground MIM with the package's CNN pretraining trainer (demo scale)."""
