"""The demo- and test-scale trainer variants, as one table: name, the trainer it varies, what it changes.

``trainers/subfore_variants.py`` makes a class of each entry (as nnU-Net keeps its two-line variants under
``nnUNetTrainer/variants/``, apart from the trainers they vary); the demo, the tests and the benchmarks
name them through this table. The variants run the shipped trainers' code paths with tiny networks,
32^3 patches, short runs and no test-time mirroring, so that the whole chain runs on 2 CPU cores in
minutes. Not for real experiments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

from nnunet_subfore.networks import TINY_ARCHITECTURES


@dataclass(frozen=True)
class Variant:
    """One trainer variant.

    Attributes:
        name: the class name (what ``nnUNetv2_train -tr`` takes and result folders carry).
        base: the trainer (shipped or an earlier variant) it subclasses.
        attributes: the class attributes it sets.
        doc: its docstring.
    """

    name: str
    base: str
    attributes: Dict[str, object] = field(default_factory=dict)
    doc: str = ""


#: Demo scale: 32^3 patches, 4 epochs of 8 iterations, no test-time mirroring.
DEMO_SCALE = dict(patch_size=(32, 32, 32), epochs=4, iterations_per_epoch=8, val_iterations_per_epoch=2,
                  mirroring=False)
#: Fine-tuning at demo scale: 6 epochs; messages name the ``_demo`` trainers.
FINETUNE_DEMO_SCALE = dict(DEMO_SCALE, epochs=6, trainer_name_suffix="_demo")
#: The CNN at demo scale: the patch of the plans (the tiny-CNN preset holds 32^3); the tiny CNN steps several
#: times faster than the tiny SwinUNETR, so pretraining runs longer (160 iterations).
CNN_DEMO_SCALE = dict(DEMO_SCALE, patch_size=None, epochs=10, iterations_per_epoch=16)
#: 300 fine-tuning iterations: measured on the demo's phantoms, the tiny CNN from scratch finds the liver by
#: then (Dice 0.95) and nothing after 48.
CNN_FINETUNE_DEMO_SCALE = dict(CNN_DEMO_SCALE, epochs=25, iterations_per_epoch=12, warmup_epochs=1,
                               trainer_name_suffix="_demo")

_SWIN, _UNETR = TINY_ARCHITECTURES["swinunetr"], TINY_ARCHITECTURES["unetr"]

VARIANTS: Tuple[Variant, ...] = (
    Variant("SubForePretrainTrainer_demo", "SubForePretrainTrainer", dict(DEMO_SCALE, architecture=_SWIN),
            "HU-foreground MIM, tiny SwinUNETR, demo scale."),
    Variant("SubForePretrainTrainer_UNETR_demo", "SubForePretrainTrainer_UNETR", dict(DEMO_SCALE, architecture=_UNETR),
            "HU-foreground MIM, tiny UNETR, demo scale."),
    Variant("SubForeRandomMaskPretrainTrainer_demo", "SubForeRandomMaskPretrainTrainer",
            dict(DEMO_SCALE, architecture=_SWIN), "Random-masking MIM, tiny SwinUNETR, demo scale."),
    Variant("SubForeSwinUNETRTrainer_demo", "SubForeSwinUNETRTrainer", dict(FINETUNE_DEMO_SCALE, architecture=_SWIN),
            "Fine-tuning, tiny SwinUNETR, demo scale."),
    Variant("SubForeSwinUNETRTrainer_demo_scratch", "SubForeSwinUNETRTrainer_demo", {},
            "The demo's from-scratch baseline (own result folder)."),
    Variant("SubForeUNETRTrainer_demo", "SubForeUNETRTrainer", dict(FINETUNE_DEMO_SCALE, architecture=_UNETR),
            "Fine-tuning, tiny UNETR, demo scale."),
    Variant("SubForeCNNPretrainTrainer_demo", "SubForeCNNPretrainTrainer", CNN_DEMO_SCALE,
            "HU-foreground MIM of the plans' CNN (the tiny-CNN preset), demo scale."),
    Variant("SubForeRandomMaskCNNPretrainTrainer_demo", "SubForeRandomMaskCNNPretrainTrainer", CNN_DEMO_SCALE,
            "Random-masking MIM of the plans' CNN, demo scale."),
    Variant("SubForeCNNFinetuneTrainer_demo", "SubForeCNNFinetuneTrainer", CNN_FINETUNE_DEMO_SCALE,
            "``PretrainedTrainer``'s recipe (lr 1e-3, warm-up, poly) at demo scale. Measured on the demo's "
            "phantoms: 300 iterations at lr 1e-3 are too few to learn any organ, so the demo fine-tunes with "
            "nnU-Net's own recipe (SubForeCNNTrainer_demo); this one is for trying the recipe on longer runs."),
    Variant("SubForeCNNTrainer_demo", "SubForeCNNFinetuneTrainer_scratch", dict(CNN_FINETUNE_DEMO_SCALE, warmup_epochs=0),
            "The stock ``nnUNetTrainer``'s recipe (SGD lr 1e-2, poly, deep supervision) at demo scale, with the "
            "checkpoint check: what ``nnUNetv2_train -pretrained_weights`` with the stock trainer does. The "
            "demo's pretrained arm."),
    Variant("SubForeCNNTrainer_demo_scratch", "SubForeCNNTrainer_demo", {},
            "The demo's from-scratch baseline: the same recipe, own result folder."),
    Variant("SubForeCNNPretrainTrainer_demoquick", "SubForeCNNPretrainTrainer_demo",
            dict(epochs=4, iterations_per_epoch=8),
            "``nnunet-subfore demo --quick`` (what the tests run): 32 pretraining iterations, a plumbing check."),
    Variant("SubForeCNNTrainer_demoquick", "SubForeCNNTrainer_demo", dict(epochs=6, iterations_per_epoch=8),
            "``demo --quick``: 48 fine-tuning iterations (too few to learn an organ: the quick demo checks the chain)."),
    Variant("SubForeCNNTrainer_demoquick_scratch", "SubForeCNNTrainer_demoquick", {},
            "``demo --quick``'s from-scratch baseline."),
)

#: The variants by name.
VARIANTS_BY_NAME: Dict[str, Variant] = {v.name: v for v in VARIANTS}
