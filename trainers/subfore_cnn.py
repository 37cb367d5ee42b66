"""HU-foreground MIM for the CNNs nnU-Net plans itself, and their fine-tuning.

    nnUNetv2_plan_experiment -d 601 -pl nnUNetPlannerResEncL          # or the default nnUNetPlans
    nnUNetv2_train 601 3d_fullres 0 -tr SubForeCNNPretrainTrainer -p nnUNetResEncUNetLPlans
    nnUNetv2_move_plans_between_datasets -s 601 -t 602 -sp nnUNetResEncUNetLPlans -tp SubForePretrainResEncL
    nnUNetv2_train 602 3d_fullres 0 -p SubForePretrainResEncL -pretrained_weights .../checkpoint_final.pth

The network is exactly the one the plans describe (``PlainConvUNet`` for ``nnUNetPlans``,
``ResidualEncoderUNet`` for ``nnUNetResEncUNet{M,L,XL}Plans``), built by nnU-Net's own
``get_network_from_plans`` (:data:`nnunet_subfore.backbones.PLANS_CNN`), with as many outputs as inputs
during pretraining. dynamic-network-architectures creates the decoder's ``seg_layers`` whatever the
deep-supervision flag, and nnU-Net's ``-pretrained_weights`` loader skips exactly those, so the
checkpoint loads into the stock ``nnUNetTrainer`` as it is (docs/workflow.md, "nnU-Net's CNNs").

Masking, loss, validation and checkpoints are :class:`SubForeMIMTrainer`'s and the fine-tuning checks
:class:`SubForeFinetuneTrainer`'s; the backbone gives the network, the patch rule (sides divisible by the
total stride and, for MIM, the 16^3 subvolumes) and the optimizers.
"""

from nnunet_subfore.adaptation_plan import ADAPTATION_PLAN_KEY, build_adaptation_plan, network_keys
from nnunet_subfore.backbones import PLANS_CNN
from nnunet_subfore.recipe import PAPER_MASKING
from nnunet_subfore.trainers.subfore_mim import SubForeMIMTrainer
from nnunet_subfore.trainers.subfore_supervised import SubForeFinetuneTrainer


class SubForeCNNPretrainTrainer(SubForeMIMTrainer):
    """HU-foreground MIM pretraining of the CNN the plans describe (U-Net, ResEnc M/L/XL).

    Optimizer: nnU-Net's and nnssl's SGD (lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5, poly decay,
    no warm-up), not the paper's AdamW. The paper's AdamW settings (lr 8e-4 / 1e-4, weight decay 0.05)
    were tuned for SwinUNETR and UNETR; for these instance-normalized CNNs with He initialization, SGD
    with poly decay is what nnU-Net tuned for supervised training and what nnssl uses for MAE
    pretraining of ResEnc-L at scale, so it is the setting with evidence behind it for this network.
    The masking stays the paper's (60 % of the foreground 16^3 blocks, noise fill, L1 on masked voxels):
    that is what this package is about.

    Its checkpoints also carry an ``nnssl_adaptation_plan`` (:mod:`nnunet_subfore.adaptation_plan`): nnU-Net
    master's ``nnUNetv2_preprocess_like_nnssl`` / ``nnUNetv2_train_pretrained`` and nnssl's tools read it.
    """

    backbone = PLANS_CNN

    def checkpoint_extras(self) -> dict:
        extras = dict(super().checkpoint_extras())
        extras[ADAPTATION_PLAN_KEY] = build_adaptation_plan(
            self.plans_manager.plans, self.configuration_name, self.num_input_channels, network_keys(self.plain_network))
        return extras


class SubForeRandomMaskCNNPretrainTrainer(SubForeCNNPretrainTrainer):
    """The ablation: random 16^3 blocks at the same ratio (foreground or not), same network and budget."""

    masking = PAPER_MASKING.with_changes(selection="random")
    random_masking = True


class SubForeCNNFinetuneTrainer(SubForeFinetuneTrainer):
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

    backbone = PLANS_CNN
    deep_supervision = True


class SubForeCNNFinetuneTrainer_scratch(SubForeCNNFinetuneTrainer):
    """The same CNN from scratch with nnU-Net's own recipe (lr 1e-2, poly, no warm-up), as ``PretrainedTrainer``
    switches to without weights: the baseline of the pretrained runs, in its own result folder."""

    base_lr = 1e-2
    warmup_epochs = 0
