"""Demo-scale variants: tiny networks, 32^3 patches, a few short epochs, no test-time mirroring.

Used by ``nnunet-subfore demo`` and the tests so the whole chain runs on 2 CPU cores in minutes.
Same code paths as the shipped trainers; only the attributes differ. Not for real experiments.
"""

from nnunet_subfore.networks import TINY_ARCHITECTURES
from nnunet_subfore.trainers.subfore_finetune import SubForeSwinUNETRTrainer, SubForeUNETRTrainer
from nnunet_subfore.trainers.subfore_pretrain import (
    SubForePretrainTrainer,
    SubForePretrainTrainer_UNETR,
    SubForeRandomMaskPretrainTrainer,
)


class DemoScale:
    """Attributes that put a SubFore trainer at demo scale (listed first among the bases)."""

    patch_size = (32, 32, 32)
    epochs = 4
    iterations_per_epoch = 8
    val_iterations_per_epoch = 2
    mirroring = False


class FinetuneDemoScale(DemoScale):
    epochs = 6
    trainers_for_backbone = {
        "swinunetr": ("SubForeSwinUNETRTrainer_demo", "SubForePretrainTrainer_demo"),
        "unetr": ("SubForeUNETRTrainer_demo", "SubForePretrainTrainer_UNETR_demo"),
    }


class SubForePretrainTrainer_demo(DemoScale, SubForePretrainTrainer):
    architecture = TINY_ARCHITECTURES["swinunetr"]


class SubForePretrainTrainer_UNETR_demo(DemoScale, SubForePretrainTrainer_UNETR):
    architecture = TINY_ARCHITECTURES["unetr"]


class SubForeRandomMaskPretrainTrainer_demo(DemoScale, SubForeRandomMaskPretrainTrainer):
    architecture = TINY_ARCHITECTURES["swinunetr"]


class SubForeSwinUNETRTrainer_demo(FinetuneDemoScale, SubForeSwinUNETRTrainer):
    architecture = TINY_ARCHITECTURES["swinunetr"]


class SubForeSwinUNETRTrainer_demo_scratch(SubForeSwinUNETRTrainer_demo):
    """The demo's from-scratch baseline (own result folder)."""


class SubForeUNETRTrainer_demo(FinetuneDemoScale, SubForeUNETRTrainer):
    architecture = TINY_ARCHITECTURES["unetr"]
