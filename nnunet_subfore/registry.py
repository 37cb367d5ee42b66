"""The one library module that knows the trainer classes.

Dependencies flow one way (``docs/architecture.md``): the CLI and the demo use the library; the
trainers in ``trainers/`` (installed as ``nnunet_subfore.trainers``) use the library; no library module
imports a trainer, except this one. It owns the folder that ``nnUNet_extTrainer`` points at and the
look-up of a trainer class by name, for the commands that must build the network a trainer would
train (``adapt-checkpoint``) without a training run. The import contracts in ``pyproject.toml``
(checked by ``tests/test_import_contracts.py``) keep it that way.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional

from nnunet_subfore.errors import UserError

TRAINER_PACKAGE = "nnunet_subfore.trainers"


def trainer_path() -> Path:
    """The folder that ``nnUNet_extTrainer`` must point at (regular and editable installs).

    Imports only the package's empty ``__init__`` (not the trainer modules, which import nnU-Net and
    torch), so that ``export nnUNet_extTrainer=$(nnunet-subfore trainer-path)`` stays instant.
    """
    package = importlib.import_module(TRAINER_PACKAGE)
    return Path(package.__file__).resolve().parent


def find_trainer_class(name: str):
    """The trainer class called ``name``: the SubFore trainers first, then where nnU-Net looks
    (its own trainers and ``nnUNet_extTrainer``), so user subclasses of SubFore trainers work too."""
    package = importlib.import_module(TRAINER_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{TRAINER_PACKAGE}.{info.name}")
        if hasattr(module, name):
            return getattr(module, name)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError as e:
        raise UserError(f"Trainer {name!r} not found among the SubFore trainers nor by nnU-Net: {e}") from e


def build_trainer_network(trainer_name: str, plans_file: Path, configuration: str, num_input_channels: int,
                          num_output_channels: int = 2, seed: Optional[int] = None):
    """The :class:`nnunet_subfore.networks.TrainerNetwork` that ``trainer_name`` would train on these plans
    (the patch fitted as the trainer fits it).

    ``trainer_name`` may be a SubFore trainer or any nnU-Net trainer that builds the CNN its plans describe
    (the stock ``nnUNetTrainer`` and its variants): those fine-tune SubFore CNN checkpoints as they are.

    Args:
        seed: build (and so initialize) the network with torch's generator seeded to this, leaving the
            caller's generator state as it was; None: draw from the generator as it is.
    """
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_subfore.networks import CNN_BACKBONE, TrainerNetwork, backbone_of_state_dict, token_grid

    from nnunet_subfore.plans_reading import read_plans, require_configuration

    trainer = find_trainer_class(trainer_name)
    plans = read_plans(Path(plans_file))
    require_configuration(plans, configuration, source=str(plans_file))
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    backbone = getattr(getattr(trainer, "backbone", None), "name", None)
    if backbone is not None and hasattr(trainer, "fitted_patch_size"):
        patch, _ = trainer.fitted_patch_size(configuration_manager.patch_size, configuration_manager)
        configuration_manager.configuration["patch_size"] = list(patch)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        network = trainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, False
        )
    if backbone is None:
        backbone = backbone_of_state_dict(network.state_dict())
        if backbone != CNN_BACKBONE or not hasattr(network, "keys_to_in_proj"):
            raise UserError(f"{trainer_name} builds a {type(network).__name__}, neither a SubFore UNETR/SwinUNETR "
                            f"nor a CNN that nnU-Net plans (PlainConvUNet, ResidualEncoderUNet).")
    return TrainerNetwork(network, backbone, token_grid(configuration_manager.patch_size) if backbone == "unetr" else None,
                          seed=seed)


def suggested_trainers(trainer_name: str) -> dict:
    """backbone name -> (fine-tuning, pretraining) trainer names that messages about ``trainer_name``'s checkpoints
    suggest: its own family's (the ``_demo`` variants name ``_demo`` trainers), else the shipped ones."""
    from nnunet_subfore.backbones import trainers_for_backbones

    trainer = find_trainer_class(trainer_name)
    family = getattr(trainer, "trainers_for_backbone", None)
    return family() if callable(family) else trainers_for_backbones()
