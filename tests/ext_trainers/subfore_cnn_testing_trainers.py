"""Test-only CNN trainer variants, found by nnU-Net through nnUNet_extTrainer (tests/conftest.py adds this folder).

``nnUNetTrainer_subfore_short`` is nnU-Net's stock trainer (its no-mirroring variant, so that validation
and prediction stay fast on CPUs) with a short run: the trainer a user fine-tunes a SubFore CNN checkpoint with.
"""

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from nnunet_subfore.trainers.subfore_cnn_demo import SubForeCNNPretrainTrainer_demo


class SubForeCNNPretrainTrainer_losstest(SubForeCNNPretrainTrainer_demo):
    """Long enough to see the masked-foreground reconstruction loss fall."""

    epochs = 6
    iterations_per_epoch = 12


class nnUNetTrainer_subfore_short(nnUNetTrainerNoMirroring):
    """The stock nnUNetTrainer, 2 epochs of 4 iterations."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2
