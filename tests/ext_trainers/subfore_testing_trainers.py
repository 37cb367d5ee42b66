"""Test-only trainer variants, found by nnU-Net through nnUNet_extTrainer (tests/conftest.py adds this folder).

Each is a shipped demo variant with one or two attributes changed, the way nnU-Net's own variants read.
"""

from nnunet_subfore.trainers.subfore_demo import (
    SubForePretrainTrainer_demo,
    SubForeSwinUNETRTrainer_demo,
    SubForeUNETRTrainer_demo,
)


class SubForePretrainTrainer_losstest(SubForePretrainTrainer_demo):
    """Long enough to see the masked-foreground reconstruction loss fall."""

    epochs = 6
    iterations_per_epoch = 12
    warmup_fraction = 0.0


class SubForeUNETRTrainer_widepatch(SubForeUNETRTrainer_demo):
    """UNETR fine-tuned at another patch than it was pretrained at (32^3): position embeddings differ."""

    patch_size = (32, 64, 64)
    epochs = 2
    iterations_per_epoch = 4


class SubForeSwinUNETRTrainer_short(SubForeSwinUNETRTrainer_demo):
    epochs = 2
    iterations_per_epoch = 4
