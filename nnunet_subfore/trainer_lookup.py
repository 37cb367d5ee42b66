"""Find a trainer class by name and build its network from plans, without a training run.

Looks in this package's trainers first, then where nnU-Net looks (its own trainers and
``nnUNet_extTrainer``), so user subclasses of SubFore trainers work too.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional, Tuple

import torch

from nnunet_subfore.errors import UserError


def find_trainer_class(name: str):
    import nnunet_subfore.trainers as package

    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, name):
            return getattr(module, name)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError as e:
        raise UserError(f"Trainer {name!r} not found among the SubFore trainers nor by nnU-Net: {e}") from e


def build_trainer_network(
    trainer_name: str, plans_file: Path, configuration: str, num_input_channels: int, num_output_channels: int = 2
) -> Tuple[torch.nn.Module, str, Optional[Tuple[int, int, int]]]:
    """The network ``trainer_name`` would train on these plans: (network, backbone, UNETR token grid or None)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    trainer = find_trainer_class(trainer_name)
    backbone = getattr(trainer, "backbone", None)
    if backbone is None or not hasattr(trainer, "fitted_patch_size"):
        raise UserError(f"{trainer_name} is not a SubFore trainer (no UNETR/SwinUNETR backbone).")
    plans_file = Path(plans_file)
    if not plans_file.is_file():
        raise UserError(f"Plans file {plans_file} does not exist (run nnUNetv2_plan_and_preprocess first).")
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise UserError(
            f"{plans_file} has no configuration {configuration!r} (available: {plans_manager.available_configurations})."
        )
    configuration_manager = plans_manager.get_configuration(configuration)
    patch, _ = trainer.fitted_patch_size(configuration_manager.patch_size)
    configuration_manager.configuration["patch_size"] = list(patch)
    network = trainer.build_network_architecture(
        plans_manager, configuration_manager, num_input_channels, num_output_channels, False
    )
    grid = tuple(p // 16 for p in patch) if backbone == "unetr" else None
    return network, backbone, grid
