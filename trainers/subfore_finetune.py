"""UNETR / SwinUNETR fine-tuning inside nnU-Net: everything nnU-Net's own but the network and optimizer.

    nnUNetv2_train 602 3d_fullres 0 -tr SubForeSwinUNETRTrainer -pretrained_weights .../checkpoint_final.pth

Without ``-pretrained_weights`` they train from scratch (the paper's dagger rows); the ``_scratch``
aliases are the same classes under another name, so that both runs get their own result folders.
The authors' settings (the backbones' fine-tuning recipes): AdamW with warm-up then cosine decay, lr
1e-3 (SwinUNETR) / 3e-4 (UNETR), weight decay 1e-5; no deep supervision. Everything else is
:class:`~nnunet_subfore.trainers.subfore_supervised.SubForeFinetuneTrainer`'s.
"""

from nnunet_subfore.backbones import SWINUNETR, UNETR
from nnunet_subfore.trainers.subfore_supervised import SubForeFinetuneTrainer, pretrained_weights_from_argv

__all__ = ["pretrained_weights_from_argv", "SubForeSwinUNETRTrainer", "SubForeUNETRTrainer",
           "SubForeSwinUNETRTrainer_scratch", "SubForeUNETRTrainer_scratch"]


class SubForeSwinUNETRTrainer(SubForeFinetuneTrainer):
    """Supervised SwinUNETR (feature 48, use_v2) in nnU-Net; takes SubForePretrainTrainer weights."""

    backbone = SWINUNETR


class SubForeUNETRTrainer(SubForeFinetuneTrainer):
    """Supervised UNETR (ViT-B/16, feature 16) in nnU-Net; takes SubForePretrainTrainer_UNETR weights."""

    backbone = UNETR


class SubForeSwinUNETRTrainer_scratch(SubForeSwinUNETRTrainer):
    """SwinUNETR from scratch: the same trainer, its own result folder."""


class SubForeUNETRTrainer_scratch(SubForeUNETRTrainer):
    """UNETR from scratch: the same trainer, its own result folder."""
