"""Test-only CNN trainer variants, found by nnU-Net through nnUNet_extTrainer (tests/conftest.py adds this folder).

``nnUNetTrainer_subfore_short`` is nnU-Net's stock trainer (its no-mirroring variant, so that validation
and prediction stay fast on CPUs) with a short run: the trainer a user fine-tunes a SubFore CNN checkpoint with.
"""

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from nnunet_subfore.trainers.subfore_variants import SubForeCNNFinetuneTrainer_demo, SubForeCNNPretrainTrainer_demo


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


class SubForeCNNPretrainTrainer_twoiters(SubForeCNNPretrainTrainer_demo):
    """The full planned network (e.g. ResEnc M) for one epoch of two iterations: it builds, trains and saves."""

    epochs = 1
    iterations_per_epoch = 2
    val_iterations_per_epoch = 1


class SubForeCNNFinetuneTrainer_short(SubForeCNNFinetuneTrainer_demo):
    """PretrainedTrainer's recipe (warm-up, then poly) for 2 epochs of 4 iterations."""

    epochs = 2
    iterations_per_epoch = 4


class SubForeCNNPretrainTrainer_firststep(SubForeCNNPretrainTrainer_twoiters):
    """Two iterations that also save the network's weights as the first optimizer step sees them
    (``weights_at_first_step.pth`` in the fold folder): what a continued pretraining starts from."""

    def train_step(self, batch: dict) -> dict:
        path = f"{self.output_folder}/weights_at_first_step.pth"
        if not getattr(self, "_first_step_saved", False):
            torch.save({k: v.detach().cpu().clone() for k, v in self.plain_network.state_dict().items()}, path)
            self._first_step_saved = True
        return super().train_step(batch)
