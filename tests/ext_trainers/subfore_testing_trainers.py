"""Test-only trainer variants, found by nnU-Net through nnUNet_extTrainer (tests/conftest.py adds this folder).

Each is a shipped demo variant with one or two attributes changed, the way nnU-Net's own variants read.
"""

import io
import os
import time

import torch

from nnunet_subfore.trainers.subfore_variants import (
    SubForePretrainTrainer_demo,
    SubForeSwinUNETRTrainer_demo,
    SubForeUNETRTrainer_demo,
)


class SubForePretrainTrainer_losstest(SubForePretrainTrainer_demo):
    """Long enough to see the masked-foreground reconstruction loss fall."""

    epochs = 6
    iterations_per_epoch = 12
    warmup_fraction = 0.0


class SubForePretrainTrainer_short(SubForePretrainTrainer_demo):
    """One short epoch: enough to see which masking settings a run uses."""

    epochs = 1
    iterations_per_epoch = 2
    val_iterations_per_epoch = 1


class SubForeUNETRTrainer_widepatch(SubForeUNETRTrainer_demo):
    """UNETR fine-tuned at another patch than it was pretrained at (32^3): position embeddings differ."""

    patch_size = (32, 64, 64)
    epochs = 2
    iterations_per_epoch = 4


class SubForeSwinUNETRTrainer_short(SubForeSwinUNETRTrainer_demo):
    epochs = 2
    iterations_per_epoch = 4


class SubForePretrainTrainer_killtest(SubForePretrainTrainer_demo):
    """Hangs half-way through writing its checkpoint_latest.pth of epoch 2 when SUBFORE_TEST_BLOCK_MARKER is set.

    It writes half of the checkpoint's bytes, creates the marker file and sleeps: the test kills it
    there, at a moment it knows to lie inside a checkpoint write.
    """

    epochs = 4

    def save_checkpoint(self, filename: str) -> None:
        marker = os.environ.get("SUBFORE_TEST_BLOCK_MARKER")
        if not (marker and os.path.basename(filename) == "checkpoint_latest.pth" and self.current_epoch == 2):
            return super().save_checkpoint(filename)
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            with open(marker, "w") as m:
                m.write("inside a checkpoint write")
            time.sleep(3600)

        torch.save = half_save
        try:
            super().save_checkpoint(filename)
        finally:
            torch.save = real_save
