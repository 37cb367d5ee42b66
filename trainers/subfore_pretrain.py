"""HU-based foreground MIM pretraining of the paper's transformers, run by the stock ``nnUNetv2_train``.

    nnUNetv2_train 601 3d_fullres 0 -tr SubForePretrainTrainer

Settings of the paper: AdamW (lr 8e-4 SwinUNETR / 1e-4 UNETR, weight decay 0.05), warm-up then cosine
decay (the backbones' pretraining recipes), no data augmentation, no deep supervision, and the masking
of :data:`nnunet_subfore.recipe.PAPER_MASKING`. Everything but the backbone is
:class:`~nnunet_subfore.trainers.subfore_mim.SubForeMIMTrainer`'s.
"""

from nnunet_subfore.backbones import SWINUNETR, UNETR
from nnunet_subfore.recipe import PAPER_MASKING
from nnunet_subfore.trainers.subfore_mim import VALIDATION_MASK_SEED, SubForeMIMTrainer

__all__ = ["VALIDATION_MASK_SEED", "SubForePretrainTrainer", "SubForePretrainTrainer_UNETR",
           "SubForeRandomMaskPretrainTrainer", "SubForeRandomMaskPretrainTrainer_UNETR"]


class SubForePretrainTrainer(SubForeMIMTrainer):
    """MIM pretraining with HU-based foreground masking, SwinUNETR backbone (the paper's default)."""

    backbone = SWINUNETR


class SubForePretrainTrainer_UNETR(SubForeMIMTrainer):
    """MIM pretraining with HU-based foreground masking, UNETR (ViT-B/16) backbone."""

    backbone = UNETR


class SubForeRandomMaskPretrainTrainer(SubForePretrainTrainer):
    """The ablation baseline: random subvolume masking at the same ratio (foreground or not), SwinUNETR."""

    masking = PAPER_MASKING.with_changes(selection="random")
    random_masking = True


class SubForeRandomMaskPretrainTrainer_UNETR(SubForePretrainTrainer_UNETR):
    """Random-masking baseline with the UNETR backbone."""

    masking = PAPER_MASKING.with_changes(selection="random")
    random_masking = True
