"""HU-foreground MIM for the CNNs nnU-Net plans itself, and their fine-tuning.

    nnUNetv2_plan_experiment -d 601 -pl nnUNetPlannerResEncL          # or the default nnUNetPlans
    nnUNetv2_train 601 3d_fullres 0 -tr SubForeCNNPretrainTrainer -p nnUNetResEncUNetLPlans
    nnUNetv2_move_plans_between_datasets -s 601 -t 602 -sp nnUNetResEncUNetLPlans -tp SubForePretrainResEncL
    nnUNetv2_train 602 3d_fullres 0 -p SubForePretrainResEncL -pretrained_weights .../checkpoint_final.pth

The network is exactly the one the plans describe (``PlainConvUNet`` for ``nnUNetPlans``,
``ResidualEncoderUNet`` for ``nnUNetResEncUNet{M,L,XL}Plans``), built by nnU-Net's own
``get_network_from_plans``, with as many outputs as inputs during pretraining. dynamic-network-architectures
creates the decoder's ``seg_layers`` whatever the deep-supervision flag, and nnU-Net's
``-pretrained_weights`` loader skips exactly those, so the checkpoint loads into the stock
``nnUNetTrainer`` as it is (docs/workflow.md, "nnU-Net's CNNs").

Masking, masked L1 loss, intensity guard, validation losses, ``checkpoint_best.pth`` selection and the
reconstruction metrics are :class:`SubForePretrainTrainer`'s; only the network, the patch rule and the
optimizer differ.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from nnunet_subfore.errors import UserError
from nnunet_subfore.networks import CNN_BACKBONE, build_plans_network, cnn_patch_divisors, valid_patch_size
from nnunet_subfore.schedules import WarmupPolyLRScheduler
from nnunet_subfore.trainers.subfore_finetune import SubForeSwinUNETRTrainer
from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer, SubForeRandomMaskPretrainTrainer

#: backbone -> (fine-tuning trainer, pretraining trainer), named in messages about a checkpoint of another backbone.
CNN_TRAINERS_FOR_BACKBONE = {
    **SubForeSwinUNETRTrainer.trainers_for_backbone,
    CNN_BACKBONE: ("SubForeCNNFinetuneTrainer (or the stock nnUNetTrainer)", "SubForeCNNPretrainTrainer"),
}


class PlansCNN:
    """The network the plans describe, SGD with Nesterov momentum and poly decay (listed first among the bases).

    Attributes:
        momentum: SGD momentum (Nesterov), nnU-Net's 0.99.
        warmup_epochs: linear warm-up before the poly decay (capped at ``num_epochs - 1``).
    """

    backbone = CNN_BACKBONE
    momentum: float = 0.99
    warmup_epochs: int = 0

    @classmethod
    def fitted_patch_size(cls, planned: Sequence[int], configuration_manager=None,
                          masking=None) -> Tuple[Tuple[int, int, int], str]:
        """Sides divisible by the network's total stride and, for MIM, by the masking's subvolume side."""
        planned = tuple(int(p) for p in planned)
        if len(planned) != 3:
            raise UserError(f"{cls.__name__} needs a 3D configuration (e.g. 3d_fullres), got the patch {planned}.")
        if configuration_manager is None:
            raise UserError(f"{cls.__name__} needs the plans' configuration to fit the patch to its network.")
        try:
            masking = masking if masking is not None else cls.masking
            divisors = cnn_patch_divisors(configuration_manager.network_arch_init_kwargs,
                                          masking.subvolume_size if masking else None)
        except ValueError as e:
            raise UserError(f"{cls.__name__}: {e}") from e
        if cls.patch_size is not None:
            patch = tuple(int(p) for p in cls.patch_size)
            if len(patch) != 3 or any(p <= 0 or p % d for p, d in zip(patch, divisors)):
                raise UserError(f"{cls.__name__}.patch_size {patch} is invalid: each side must be a positive "
                                f"multiple of {divisors} (total stride and masking subvolume).")
            return patch, f"{cls.__name__}.patch_size"
        what = f"total stride and {masking.subvolume_size}^3 masking subvolumes" if masking else "total stride"
        return valid_patch_size(planned, divisors), f"the CNN needs sides divisible by {list(divisors)} ({what})"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> torch.nn.Module:
        if cls.masking is not None:  # MIM: the output is the reconstructed input, one map per input channel
            return build_plans_network(configuration_manager, num_input_channels, num_input_channels, False)
        return build_plans_network(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=self.momentum, nesterov=True)
        warmup = min(int(self.warmup_epochs), self.num_epochs - 1)
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)


class SubForeCNNPretrainTrainer(PlansCNN, SubForePretrainTrainer):
    """HU-foreground MIM pretraining of the CNN the plans describe (U-Net, ResEnc M/L/XL).

    Optimizer: nnU-Net's and nnssl's SGD (lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5, poly decay,
    no warm-up), not the paper's AdamW. The paper's AdamW settings (lr 8e-4 / 1e-4, weight decay 0.05)
    were tuned for SwinUNETR and UNETR; for these instance-normalized CNNs with He initialization, SGD
    with poly decay is what nnU-Net tuned for supervised training and what nnssl uses for MAE
    pretraining of ResEnc-L at scale, so it is the setting with evidence behind it for this network.
    The masking stays the paper's (60 % of the foreground 16^3 blocks, noise fill, L1 on masked voxels):
    that is what this package is about. The patch moves to sides divisible by lcm(16, total stride),
    written into the saved plans.
    """

    base_lr = 1e-2
    base_weight_decay = 3e-5


class SubForeRandomMaskCNNPretrainTrainer(SubForeCNNPretrainTrainer, SubForeRandomMaskPretrainTrainer):
    """The ablation: random 16^3 blocks at the same ratio (foreground or not), same network and budget."""


class SubForeCNNFinetuneTrainer(PlansCNN, SubForeSwinUNETRTrainer):
    """Fine-tunes a SubFore CNN checkpoint with the recipe of nnU-Net's (master) ``PretrainedTrainer``.

    SGD lr 1e-3 (Nesterov 0.99, weight decay 3e-5), 50 epochs of linear warm-up, then poly decay; the
    checkpoint is checked before nnU-Net's loader runs (a message with the fix instead of an assertion).
    Everything else is the stock ``nnUNetTrainer``: loss, sampling, augmentation, validation, export.

    Deep supervision stays on, unlike ``PretrainedTrainer``. That trainer serves networks (nnssl's
    pretraining architectures, Primus) without nnU-Net's deep-supervision heads; here the pretrained
    network is nnU-Net's own U-Net whose decoder was trained at every resolution, all ``seg_layers`` are
    new either way, and deep supervision gives the lower decoder stages a direct gradient from the labels
    while they switch from reconstruction to segmentation. It also keeps this route comparable with
    the stock ``nnUNetTrainer -pretrained_weights`` route and with nnU-Net from scratch, which both use it.
    """

    base_lr = 1e-3
    base_weight_decay = 3e-5
    warmup_epochs = 50
    deep_supervision = True
    trainers_for_backbone = CNN_TRAINERS_FOR_BACKBONE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = self.deep_supervision


class SubForeCNNFinetuneTrainer_scratch(SubForeCNNFinetuneTrainer):
    """The same CNN from scratch with nnU-Net's own recipe (lr 1e-2, poly, no warm-up), as ``PretrainedTrainer``
    switches to without weights: the baseline of the pretrained runs, in its own result folder."""

    base_lr = 1e-2
    warmup_epochs = 0
