"""The demo's chains: which trainers and plans ``nnunet-subfore demo`` runs for each backbone.

A table of names, apart from the demo's steps, so that other commands (``label-efficiency --quick``)
and the tests take the same demo-scale trainers without importing the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional

DOWNSTREAM_PLANS = "SubForePretrainPlans"
PRETRAINER = "SubForePretrainTrainer_demo"
FINETUNER = "SubForeSwinUNETRTrainer_demo"
SCRATCH = "SubForeSwinUNETRTrainer_demo_scratch"


@dataclass(frozen=True)
class DemoChain:
    """The trainers and plans of one demo chain.

    Attributes:
        pretrain_plans: plans the pretraining runs with on the pretraining set (nnUNetPlans, or a preset
            derived from it that the demo writes first).
        downstream_plans: the name the pretraining plans take on the downstream set.
        tiny_cnn: derive ``pretrain_plans`` from nnUNetPlans with ``nnunet-subfore plans --tiny-cnn``.
    """

    backbone: str
    title: str
    pretrainer: str
    finetuner: str
    scratch: str
    pretrain_plans: str
    downstream_plans: str
    tiny_cnn: bool = False
    #: ``--quick`` (what the tests run): (pretrainer, finetuner, scratch) with shorter runs, if the chain has them
    quick_trainers: Optional[tuple] = None

    def for_quick(self) -> "DemoChain":
        """The chain ``--quick`` runs."""
        if not self.quick_trainers:
            return self
        pretrainer, finetuner, scratch = self.quick_trainers
        return replace(self, pretrainer=pretrainer, finetuner=finetuner, scratch=scratch, quick_trainers=None)


CHAINS: Dict[str, DemoChain] = {
    "cnn": DemoChain("cnn", "nnU-Net's U-Net (a tiny version of the planned network)", "SubForeCNNPretrainTrainer_demo",
                     "SubForeCNNTrainer_demo", "SubForeCNNTrainer_demo_scratch", "SubForeDemoCNNPlans",
                     "SubForePretrainCNNPlans", tiny_cnn=True,
                     quick_trainers=("SubForeCNNPretrainTrainer_demoquick", "SubForeCNNTrainer_demoquick",
                                     "SubForeCNNTrainer_demoquick_scratch")),
    "swinunetr": DemoChain("swinunetr", "SwinUNETR", PRETRAINER, FINETUNER, SCRATCH, "nnUNetPlans", DOWNSTREAM_PLANS),
}
#: The chain ``nnunet-subfore demo`` runs without ``--backbone`` (README, "Demo": why the CNN).
DEFAULT_BACKBONE = "cnn"
