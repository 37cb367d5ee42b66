"""The backbones a SubFore trainer takes: small objects that know how to build their network, which of
its keys see the input channels, their default optimizers and their patch rules.

A trainer names one backbone (``backbone = SWINUNETR``) and asks it for everything that differs between
networks; the trainers themselves hold the nnU-Net logic (MIM or segmentation) once. Backbones are
siblings: SwinUNETR, UNETR and the CNN nnU-Net plans itself (``PlainConvUNet``, ``ResidualEncoderUNet``).
:data:`BACKBONES` is the registry by name (what checkpoints and messages use).

Adding a backbone: a :class:`Backbone` subclass (network, patch rule, stem keys, optimizers), one entry
in :data:`BACKBONES`, and a trainer module with its pretraining and fine-tuning trainer
(docs/architecture.md, "Adding a backbone").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from nnunet_subfore.networks import (
    CNN_BACKBONE,
    PATCH_DIVISORS,
    STEM_KEYS,
    build_network,
    build_plans_network,
    check_patch_size,
    cnn_patch_divisors,
    cnn_stem_keys,
    valid_patch_size,
)
from nnunet_subfore.schedules import WarmupCosineLRScheduler, WarmupPolyLRScheduler
from nnunet_subfore.transfer import encoder_key_prefixes

Patch = Tuple[int, int, int]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly")


@dataclass(frozen=True)
class OptimizerRecipe:
    """How a trainer optimizes: optimizer, learning rate, weight decay, warm-up and decay schedule.

    Attributes:
        optimizer: ``"adamw"`` or ``"sgd"`` (Nesterov, with :attr:`momentum`).
        lr: peak learning rate (reached at the end of the warm-up).
        weight_decay: the optimizer's weight decay.
        schedule: ``"cosine"`` (the paper's transformers) or ``"poly"`` (nnU-Net's, exponent 0.9).
        warmup_epochs: linear warm-up in epochs; None: :attr:`warmup_fraction` of the epochs.
        warmup_fraction: share of the epochs spent warming up when :attr:`warmup_epochs` is None.
        momentum: SGD's momentum (nnU-Net's 0.99); unused by AdamW.
    """

    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_epochs: Optional[int] = None
    warmup_fraction: float = 0.0
    momentum: float = 0.99

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}.")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 or None, got {self.warmup_epochs}.")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}.")

    def with_changes(self, **changes) -> "OptimizerRecipe":
        """This recipe with the given fields replaced; fields given as None keep their value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def warmup(self, num_epochs: int) -> int:
        """Warm-up epochs of a run of ``num_epochs`` (at most ``num_epochs - 1``)."""
        epochs = self.warmup_epochs if self.warmup_epochs is not None else int(round(self.warmup_fraction * num_epochs))
        return max(0, min(int(epochs), num_epochs - 1))

    def build(self, parameters: Iterable[torch.nn.Parameter], num_epochs: int):
        """The optimizer and its per-epoch scheduler (nnU-Net's ``configure_optimizers`` return value)."""
        if self.optimizer == "adamw":
            optimizer = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(parameters, self.lr, weight_decay=self.weight_decay,
                                        momentum=self.momentum, nesterov=True)
        scheduler = WarmupCosineLRScheduler if self.schedule == "cosine" else WarmupPolyLRScheduler
        return optimizer, scheduler(optimizer, self.lr, num_epochs, self.warmup(num_epochs))


@dataclass(frozen=True)
class Backbone:
    """One family of networks a SubFore trainer can train (not meant to be used directly: see the subclasses).

    Attributes:
        name: the name in checkpoints, messages and :data:`BACKBONES` (``"swinunetr"``, ``"unetr"``, ``"cnn"``).
        pretraining: the optimizer recipe of its MIM pretraining trainers.
        finetuning: the optimizer recipe of its fine-tuning trainers.
        trainers: (fine-tuning trainer, pretraining trainer) names to suggest in messages.
    """

    name: str
    pretraining: OptimizerRecipe
    finetuning: OptimizerRecipe
    trainers: Tuple[str, str]

    def patch_divisors(self, configuration_manager, subvolume_size: Optional[int]) -> Patch:
        """What each patch side must be divisible by (with MIM, the masking's subvolume side too)."""
        raise NotImplementedError

    def check_patch(self, patch: Patch, architecture: Optional[dict]) -> None:
        """Raise ``ValueError`` if the network cannot take ``patch`` (beyond divisibility)."""

    def fit_patch(self, planned: Sequence[int], configuration_manager=None, subvolume_size: Optional[int] = None,
                  forced: Optional[Sequence[int]] = None, architecture: Optional[dict] = None) -> Tuple[Patch, str]:
        """The patch to train on, from the planned one (or ``forced``), and why it differs.

        Raises:
            ValueError: no valid patch (e.g. a 2D configuration, or an invalid forced patch).
        """
        planned = tuple(int(p) for p in planned)
        if len(planned) != 3:
            raise ValueError(f"{self.name} needs a 3D configuration (e.g. 3d_fullres), got the patch {planned}")
        divisors = self.patch_divisors(configuration_manager, subvolume_size)
        if forced is not None:
            patch, reason = tuple(int(p) for p in forced), "its patch_size"
        else:
            what = f" and {subvolume_size}^3 masking subvolumes" if subvolume_size else ""
            patch = valid_patch_size(planned, divisors)
            reason = f"{self.name} needs sides divisible by {list(divisors)}{what}"
        if len(patch) != 3 or any(p <= 0 or p % d for p, d in zip(patch, divisors)):
            raise ValueError(f"patch {patch} is invalid: each side must be a positive multiple of {list(divisors)}")
        self.check_patch(patch, architecture)
        return patch, reason

    def build(self, configuration_manager, num_input_channels: int, num_output_channels: int,
              architecture: Optional[dict] = None, deep_supervision: bool = False) -> nn.Module:
        """The network for the configuration's (fitted) patch."""
        raise NotImplementedError

    def stem_keys(self, network: nn.Module) -> Tuple[str, ...]:
        """The state-dict keys whose dim 1 is the number of input channels."""
        raise NotImplementedError

    def encoder_prefixes(self, network: nn.Module) -> Tuple[str, ...]:
        """The state-dict key prefixes of the encoder, stem and input projection: what an encoder-only transfer
        carries over (:func:`nnunet_subfore.transfer.encoder_key_prefixes`)."""
        return encoder_key_prefixes(self.name, network)


@dataclass(frozen=True)
class MonaiBackbone(Backbone):
    """MONAI's SwinUNETR or UNETR (``networks.build_network``), nnU-Net's head naming, no deep supervision."""

    def patch_divisors(self, configuration_manager, subvolume_size: Optional[int]) -> Patch:
        divisor = PATCH_DIVISORS[self.name]
        divisor = math.lcm(divisor, int(subvolume_size)) if subvolume_size else divisor
        return (divisor,) * 3

    def check_patch(self, patch: Patch, architecture: Optional[dict]) -> None:
        check_patch_size(self.name, patch, architecture)

    def build(self, configuration_manager, num_input_channels: int, num_output_channels: int,
              architecture: Optional[dict] = None, deep_supervision: bool = False) -> nn.Module:
        return build_network(self.name, configuration_manager.patch_size, num_input_channels, num_output_channels,
                             architecture)

    def stem_keys(self, network: nn.Module) -> Tuple[str, ...]:
        return STEM_KEYS[self.name]


@dataclass(frozen=True)
class PlansCNNBackbone(Backbone):
    """The CNN the plans describe (``PlainConvUNet``, ``ResidualEncoderUNet``), built by nnU-Net's
    ``get_network_from_plans`` with nnU-Net's initialization; ``architecture`` is unused (the plans say it)."""

    def patch_divisors(self, configuration_manager, subvolume_size: Optional[int]) -> Patch:
        if configuration_manager is None:
            raise ValueError("the CNN needs the plans' configuration to fit the patch to its network")
        return cnn_patch_divisors(configuration_manager.network_arch_init_kwargs, subvolume_size)

    def build(self, configuration_manager, num_input_channels: int, num_output_channels: int,
              architecture: Optional[dict] = None, deep_supervision: bool = False) -> nn.Module:
        return build_plans_network(configuration_manager, num_input_channels, num_output_channels, deep_supervision)

    def stem_keys(self, network: nn.Module) -> Tuple[str, ...]:
        return cnn_stem_keys(network)


#: The paper's transformers: AdamW, warm-up then cosine; pretraining lr 8e-4 (SwinUNETR) / 1e-4 (UNETR), weight
#: decay 0.05; fine-tuning lr 1e-3 / 3e-4, weight decay 1e-5 (the authors' README).
SWINUNETR = MonaiBackbone(
    "swinunetr",
    pretraining=OptimizerRecipe("adamw", 8e-4, 0.05, "cosine", warmup_fraction=0.05),
    finetuning=OptimizerRecipe("adamw", 1e-3, 1e-5, "cosine", warmup_fraction=0.05),
    trainers=("SubForeSwinUNETRTrainer", "SubForePretrainTrainer"),
)
UNETR = MonaiBackbone(
    "unetr",
    pretraining=OptimizerRecipe("adamw", 1e-4, 0.05, "cosine", warmup_fraction=0.05),
    finetuning=OptimizerRecipe("adamw", 3e-4, 1e-5, "cosine", warmup_fraction=0.05),
    trainers=("SubForeUNETRTrainer", "SubForePretrainTrainer_UNETR"),
)
#: nnU-Net's CNNs: pretraining with nnU-Net's and nnssl's SGD (lr 1e-2, poly, no warm-up); fine-tuning with
#: nnU-Net master's ``PretrainedTrainer`` recipe (SGD lr 1e-3, 50 warm-up epochs, then poly).
PLANS_CNN = PlansCNNBackbone(
    CNN_BACKBONE,
    pretraining=OptimizerRecipe("sgd", 1e-2, 3e-5, "poly", warmup_epochs=0),
    finetuning=OptimizerRecipe("sgd", 1e-3, 3e-5, "poly", warmup_epochs=50),
    trainers=("SubForeCNNFinetuneTrainer", "SubForeCNNPretrainTrainer"),
)

#: The backbones by name: the registry that checkpoints and messages use.
BACKBONES: Dict[str, Backbone] = {b.name: b for b in (SWINUNETR, UNETR, PLANS_CNN)}


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name`` (:data:`BACKBONES`)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; known: {sorted(BACKBONES)}.") from None


def trainers_for_backbones(suffix: str = "") -> Dict[str, Tuple[str, str]]:
    """backbone name -> (fine-tuning trainer, pretraining trainer) names, each with ``suffix`` (a variant
    family such as ``"_demo"`` names its own trainers in messages)."""
    return {name: (b.trainers[0] + suffix, b.trainers[1] + suffix) for name, b in BACKBONES.items()}
