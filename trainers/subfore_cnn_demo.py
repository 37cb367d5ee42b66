"""Demo-scale variants of the CNN trainers: short runs, no test-time mirroring.

The tiny network itself is not here: nnU-Net's stock trainer rebuilds the network from the plans, so
the tiny CNN lives in a plans preset derived from the dataset's plans
(``nnunet-subfore plans -d ID --tiny-cnn --plans-name SubForeTinyCNNPlans``: 3 stages, 16-64 features,
32^3 patch), which pretraining, fine-tuning (stock or SubFore) and prediction all read. Not for real
experiments.
"""

from nnunet_subfore.networks import CNN_BACKBONE
from nnunet_subfore.trainers.subfore_cnn import (
    SubForeCNNFinetuneTrainer,
    SubForeCNNFinetuneTrainer_scratch,
    SubForeCNNPretrainTrainer,
    SubForeRandomMaskCNNPretrainTrainer,
)
from nnunet_subfore.trainers.subfore_demo import DemoScale, FinetuneDemoScale


class CNNDemoScale(DemoScale):
    """DemoScale with the patch of the plans (the tiny-CNN preset holds 32^3); the tiny CNN steps several times
    faster than the tiny SwinUNETR, so pretraining runs longer (160 iterations)."""

    patch_size = None
    epochs = 10
    iterations_per_epoch = 16


class CNNFinetuneDemoScale(CNNDemoScale):
    """300 iterations: measured on the demo's phantoms, the tiny CNN from scratch finds the liver by then (Dice
    0.95) and nothing after 48."""

    epochs = 25
    iterations_per_epoch = 12
    warmup_epochs = 1
    trainers_for_backbone = {
        **FinetuneDemoScale.trainers_for_backbone,
        CNN_BACKBONE: ("SubForeCNNFinetuneTrainer_demo", "SubForeCNNPretrainTrainer_demo"),
    }


class SubForeCNNPretrainTrainer_demo(CNNDemoScale, SubForeCNNPretrainTrainer):
    pass


class SubForeRandomMaskCNNPretrainTrainer_demo(CNNDemoScale, SubForeRandomMaskCNNPretrainTrainer):
    pass


class SubForeCNNFinetuneTrainer_demo(CNNFinetuneDemoScale, SubForeCNNFinetuneTrainer):
    """``PretrainedTrainer``'s recipe (lr 1e-3, warm-up, poly) at demo scale. Measured on the demo's phantoms:
    300 iterations at lr 1e-3 are too few to learn any organ, so the demo fine-tunes with nnU-Net's own
    recipe (:class:`SubForeCNNTrainer_demo`); this one is for trying the recipe on longer runs."""


class SubForeCNNTrainer_demo(CNNFinetuneDemoScale, SubForeCNNFinetuneTrainer_scratch):
    """The stock ``nnUNetTrainer``'s recipe (SGD lr 1e-2, poly, deep supervision) at demo scale, with the checkpoint
    check: what ``nnUNetv2_train -pretrained_weights`` with the stock trainer does. The demo's pretrained arm."""

    warmup_epochs = 0


class SubForeCNNTrainer_demo_scratch(SubForeCNNTrainer_demo):
    """The demo's from-scratch baseline: the same recipe, own result folder."""


class SubForeCNNPretrainTrainer_demoquick(SubForeCNNPretrainTrainer_demo):
    """``nnunet-subfore demo --quick`` (what the tests run): 32 pretraining iterations, a plumbing check."""

    epochs = 4
    iterations_per_epoch = 8


class SubForeCNNTrainer_demoquick(SubForeCNNTrainer_demo):
    """``demo --quick``: 48 fine-tuning iterations (too few to learn an organ: the quick demo checks the chain)."""

    epochs = 6
    iterations_per_epoch = 8


class SubForeCNNTrainer_demoquick_scratch(SubForeCNNTrainer_demoquick):
    """``demo --quick``'s from-scratch baseline."""
