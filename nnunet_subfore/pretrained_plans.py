"""Plans for a dataset from a pretrained checkpoint's ``nnssl_adaptation_plan`` (nnssl's or ours).

What nnU-Net master's ``nnUNetv2_preprocess_like_nnssl`` does with the plan (``like_nnssl.py``, see
:mod:`nnunet_subfore.adaptation_plan`), for nnU-Net 2.8's own trainers: the dataset's plans with the
checkpoint's network, the pretraining spacing and the recommended downstream patch, batch size 2, and a
data identifier of their own (the new spacing needs its own preprocessing). Unlike nnU-Net master, the
dataset's normalization stays: nnU-Net master switches every channel to z-score (as nnssl pretrains),
which would hide the HU values that HU-foreground masking and CT need (docs/workflow.md).

nnssl names its networks without ``arch_kwargs`` (``ResEncL``); :data:`NNSSL_ARCHITECTURES` resolves the
names to the network nnssl builds for them (format facts from MIC-DKFZ/nnssl, no code taken).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from nnunet_subfore.adaptation_plan import (
    ADAPTATION_PLAN_KEY,
    adaptation_plan_problems,
    pretraining_configuration,
)
from nnunet_subfore.errors import UserError
from nnunet_subfore.networks import cnn_total_strides
from nnunet_subfore.plans_reading import configuration as plans_configuration

#: The package of dynamic-network-architectures' U-Nets (the class names nnU-Net plans use).
_UNET_MODULE = "dynamic_network_architectures.architectures.unet"
#: The imports nnU-Net resolves in a U-Net's ``arch_kwargs``.
_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

#: nnssl's ResEnc-L (``ResEncL``): the ResidualEncoderUNet it builds, as nnU-Net plans' ``architecture``.
RESENC_L_ARCHITECTURE = {
    "network_class_name": f"{_UNET_MODULE}.ResidualEncoderUNet",
    "arch_kwargs": {
        "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
        "n_conv_per_stage_decoder": [1] * 5, "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": list(_REQUIRES_IMPORT),
}
#: nnssl's architecture names (``arch_kwargs`` None) that resolve here.
NNSSL_ARCHITECTURES = {"ResEncL": RESENC_L_ARCHITECTURE}
#: The plans entry that records where the architecture, spacing and patch came from.
PRETRAINED_FROM_KEY = "subfore_pretrained_from"
#: nnU-Net master's fine-tuning batch size for these checkpoints (PretrainedTrainer, like_nnssl.py).
PRETRAINED_BATCH_SIZE = 2


def resolve_architecture(architecture_plans: Mapping[str, Any]) -> Dict[str, Any]:
    """A checkpoint's ``architecture_plans`` as nnU-Net plans' ``architecture`` (class, kwargs, imports).

    Args:
        architecture_plans: ``nnssl_adaptation_plan['architecture_plans']``: a named nnssl preset
            (``arch_kwargs`` None, :data:`NNSSL_ARCHITECTURES`) or a U-Net with its ``arch_kwargs``.

    Raises:
        UserError: a name without ``arch_kwargs`` that is not a supported preset (e.g. nnssl's Primus).
    """
    name = str(architecture_plans.get("arch_class_name"))
    kwargs = architecture_plans.get("arch_kwargs")
    if not kwargs:
        if name not in NNSSL_ARCHITECTURES:
            raise UserError(f"The checkpoint's network {name!r} comes without arch_kwargs and is not one this package "
                            f"can build; supported: {', '.join(NNSSL_ARCHITECTURES)} and U-Nets given with their "
                            f"arch_kwargs (PlainConvUNet, ResidualEncoderUNet). Transformers (Primus) are not supported.")
        return copy.deepcopy(NNSSL_ARCHITECTURES[name])
    if not name.endswith(("PlainConvUNet", "ResidualEncoderUNet")):
        raise UserError(f"The checkpoint's network {name!r} is not a U-Net nnU-Net plans (PlainConvUNet, "
                        f"ResidualEncoderUNet); this package cannot build it.")
    return {"network_class_name": name if "." in name else f"{_UNET_MODULE}.{name}",
            "arch_kwargs": copy.deepcopy(dict(kwargs)),
            "_kw_requires_import": list(architecture_plans.get("arch_kwargs_requiring_import") or _REQUIRES_IMPORT)}


def checked_adaptation_plan(checkpoint: Mapping[str, Any], source: Path) -> Dict[str, Any]:
    """The checkpoint's ``nnssl_adaptation_plan``; a UserError naming what is missing."""
    plan = checkpoint.get(ADAPTATION_PLAN_KEY)
    if plan is None:
        raise UserError(f"{source} carries no {ADAPTATION_PLAN_KEY}: it is neither an nnssl checkpoint nor a CNN "
                        f"pretraining checkpoint of this package. Plan with `nnunet-subfore plans -d ID` and move "
                        f"the pretraining plans instead (docs/workflow.md).")
    problems = adaptation_plan_problems(plan)
    if problems:
        raise UserError(f"The {ADAPTATION_PLAN_KEY} of {source} is incomplete: {'; '.join(problems)}.")
    return dict(plan)


def derive_plans_from_adaptation_plan(
    plans: dict,
    plan: Mapping[str, Any],
    configuration: str = "3d_fullres",
    target_plans: str = "SubForePretrainedPlans",
    patch_size: Optional[Sequence[int]] = None,
    source: str = "the checkpoint",
) -> dict:
    """The dataset's plans with the checkpoint's network, pretraining spacing and downstream patch (a new dict).

    Args:
        plans: the dataset's plans (e.g. its ``nnUNetPlans.json``); normalization and the rest are kept.
        plan: the checkpoint's ``nnssl_adaptation_plan`` (:func:`checked_adaptation_plan`).
        configuration: the 3d configuration to write (the only one in the result).
        target_plans: the new plans' name (and data identifier prefix).
        patch_size: the patch; None: the plan's ``recommended_downstream_patchsize``.
        source: the checkpoint, for messages and the record in the plans.
    """
    config = plans_configuration(plans, configuration, source="The dataset's plans")
    architecture = resolve_architecture(plan["architecture_plans"])
    pretraining = pretraining_configuration(plan)
    patch = [int(p) for p in (patch_size if patch_size is not None else plan["recommended_downstream_patchsize"])]
    strides = cnn_total_strides(architecture["arch_kwargs"])
    if len(patch) != 3 or any(p <= 0 or p % s for p, s in zip(patch, strides)):
        raise UserError(f"The patch {patch} does not suit the checkpoint's network: each side must be a positive "
                        f"multiple of its total stride {list(strides)}; pass --patch D H W.")
    spacing = pretraining.get("spacing")
    config.update(architecture=architecture, patch_size=patch, batch_size=PRETRAINED_BATCH_SIZE,
                  data_identifier=f"{target_plans}_{configuration}")
    if spacing is not None and None not in spacing:  # nnssl's "no resampling" keeps the dataset's spacing
        config["spacing"] = [float(s) for s in spacing]
    new = copy.deepcopy(plans)
    new["plans_name"] = target_plans
    new["configurations"] = {configuration: config}
    new[PRETRAINED_FROM_KEY] = {
        "checkpoint": source, "arch_class_name": plan["architecture_plans"].get("arch_class_name"),
        "pretrain_spacing": spacing, "pretrain_patch_size": pretraining.get("patch_size"),
        "recommended_downstream_patchsize": plan["recommended_downstream_patchsize"],
        "pretrain_num_input_channels": plan["pretrain_num_input_channels"],
    }
    return new


def plans_from_checkpoint(plans: dict, checkpoint_path: Path, configuration: str, target_plans: str,
                          patch_size: Optional[Sequence[int]] = None) -> dict:
    """:func:`derive_plans_from_adaptation_plan` with the plan read (safely) from ``checkpoint_path``."""
    from nnunet_subfore.checkpoints import load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    plan = checked_adaptation_plan(load_checkpoint(checkpoint_path), checkpoint_path)
    return derive_plans_from_adaptation_plan(plans, plan, configuration, target_plans, patch_size,
                                             source=str(checkpoint_path.resolve()))
