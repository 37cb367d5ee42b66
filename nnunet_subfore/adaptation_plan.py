"""The ``nnssl_adaptation_plan`` of a checkpoint: what nnU-Net master and nnssl read to fine-tune it.

Format (facts, checked against the public sources; no code taken from them):

* nnU-Net master, MIC-DKFZ/nnUNet ``nnunetv2/experiment_planning/like_nnssl.py`` (commit 202f6baa,
  ``preprocess_like_nnssl`` / ``plan_like_dynamic``, behind ``nnUNetv2_preprocess_like_nnssl``) loads the
  checkpoint with ``torch.load(..., weights_only=True)`` and reads, without defaults,
  ``architecture_plans.{arch_class_name, arch_kwargs, arch_kwargs_requiring_import}``, the first entry of
  ``pretrain_plan.configurations`` (its ``spacing`` and ``patch_size``), ``pretrain_num_input_channels``,
  ``recommended_downstream_patchsize``, ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj`` and
  ``key_to_lpe``; ``citations`` (top level) is optional. The architecture becomes the plans' ``architecture``
  (``arch_class_name`` -> ``network_class_name``, ``arch_kwargs_requiring_import`` -> ``_kw_requires_import``).
* ``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py`` (commit 3605eea1,
  ``PretrainedTrainer.load_pretrained_weights``, ``nnUNetv2_train_pretrained``) loads ``network_weights``
  again with ``weights_only=True``, takes ``key_to_stem``, ``key_to_encoder``, ``keys_to_in_proj`` and
  ``key_to_lpe`` from the plan, and loads the tensors under ``key_to_encoder`` and ``key_to_stem`` (prefix
  stripped) strictly into the network's encoder and stem; the decoder starts fresh. A class name ending in
  ``PlainConvUNet`` / ``ResidualEncoderUNet`` is built by nnU-Net's ``get_network_from_plans`` from
  ``arch_kwargs``.
* nnssl, MIC-DKFZ/nnssl ``src/nnssl/adaptation_planning/adaptation_plan.py`` (commit 286f3f4f): the same
  fields; ``arch_kwargs`` None for its named presets (``ResEncL``, ``PrimusM``, ...).

Everything here is plain data (dicts, lists, str, int, float, bool, None) so that a ``weights_only=True``
load accepts it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nnunet_subfore.plans_reading import configuration as plans_configuration

#: The checkpoint entry nnU-Net master and nnssl read.
ADAPTATION_PLAN_KEY = "nnssl_adaptation_plan"
#: The optional checkpoint entry with the papers to cite (nnssl's; nnU-Net master prints them).
CITATIONS_KEY = "citations"
#: What nnU-Net master reads of the adaptation plan without a default (like_nnssl.py, pretrainedTrainer.py).
REQUIRED_PLAN_KEYS = ("architecture_plans", "pretrain_plan", "pretrain_num_input_channels",
                      "recommended_downstream_patchsize", "key_to_encoder", "key_to_stem", "keys_to_in_proj",
                      "key_to_lpe")
#: What it reads of ``architecture_plans``.
REQUIRED_ARCHITECTURE_KEYS = ("arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import")


def network_keys(network) -> Dict[str, Any]:
    """Where a dynamic-network-architectures U-Net keeps its encoder, stem and input projection.

    Args:
        network: a ``PlainConvUNet`` / ``ResidualEncoderUNet`` (they name these keys themselves).

    Raises:
        ValueError: the network does not name them (dynamic-network-architectures older than 0.4.4).
    """
    try:
        keys = {"key_to_encoder": str(network.key_to_encoder), "key_to_stem": str(network.key_to_stem),
                "keys_to_in_proj": [str(k) for k in network.keys_to_in_proj]}
    except AttributeError as e:
        raise ValueError(f"{type(network).__name__} does not name its encoder, stem and input projection "
                         f"(key_to_encoder, key_to_stem, keys_to_in_proj).") from e
    keys["key_to_lpe"] = getattr(network, "key_to_lpe", None)
    return keys


def build_adaptation_plan(
    plans: Mapping[str, Any],
    configuration: str,
    num_input_channels: int,
    keys: Mapping[str, Any],
    recommended_patch_size: Optional[Sequence[int]] = None,
) -> Dict[str, Any]:
    """The ``nnssl_adaptation_plan`` of a CNN pretrained on ``plans`` / ``configuration``.

    Args:
        plans: the plans the pretraining ran with (the trainer's, with the patch it trained on).
        configuration: the configuration it ran (``3d_fullres``).
        num_input_channels: the pretraining network's input channels.
        keys: :func:`network_keys` of the pretraining network.
        recommended_patch_size: the patch to recommend for fine-tuning; None: the pretraining patch.
    """
    config = plans_configuration(plans, configuration, source="The pretraining plans")
    arch = config.get("architecture") or {}
    if "network_class_name" not in arch or not arch.get("arch_kwargs"):
        raise ValueError(f"Configuration {configuration!r} of the pretraining plans names no network architecture "
                         f"(architecture.network_class_name and arch_kwargs).")
    patch = [int(p) for p in config["patch_size"]]
    plan = {
        "architecture_plans": {"arch_class_name": arch["network_class_name"], "arch_kwargs": arch["arch_kwargs"],
                               "arch_kwargs_requiring_import": list(arch.get("_kw_requires_import", []))},
        "pretrain_plan": _pretrain_plan(plans, configuration, config, patch),
        "pretrain_num_input_channels": int(num_input_channels),
        "recommended_downstream_patchsize": [int(p) for p in (recommended_patch_size or patch)],
        "key_to_encoder": keys["key_to_encoder"],
        "key_to_stem": keys["key_to_stem"],
        "keys_to_in_proj": list(keys["keys_to_in_proj"]),
        "key_to_lpe": keys.get("key_to_lpe"),
    }
    return json.loads(json.dumps(plan))  # plain values only (tuples -> lists, numpy numbers refused loudly)


def _pretrain_plan(plans: Mapping[str, Any], configuration: str, config: Mapping[str, Any],
                   patch: List[int]) -> Dict[str, Any]:
    """nnssl's ``pretrain_plan`` layout, filled from nnU-Net plans (plus the CT normalization it used)."""
    keep = ("data_identifier", "preprocessor_name", "normalization_schemes", "use_mask_for_norm")
    return {
        "dataset_name": plans.get("dataset_name"),
        "plans_name": plans.get("plans_name"),
        "transpose_forward": list(plans.get("transpose_forward", [0, 1, 2])),
        "transpose_backward": list(plans.get("transpose_backward", [0, 1, 2])),
        "foreground_intensity_properties_per_channel": plans.get("foreground_intensity_properties_per_channel"),
        "configurations": {configuration: {
            **{k: config[k] for k in keep if k in config},
            "spacing": [float(s) for s in config["spacing"]],
            "patch_size": patch,
        }},
    }


def adaptation_plan_problems(plan: Any) -> List[str]:
    """What nnU-Net master would miss in ``plan`` (empty: it reads everything it needs).

    Args:
        plan: a checkpoint's ``nnssl_adaptation_plan``.
    """
    if not isinstance(plan, Mapping):
        return [f"the adaptation plan is a {type(plan).__name__}, not a dict"]
    problems = [f"no {key!r}" for key in REQUIRED_PLAN_KEYS if key not in plan]
    arch = plan.get("architecture_plans")
    if isinstance(arch, Mapping):
        problems += [f"no architecture_plans.{key}" for key in REQUIRED_ARCHITECTURE_KEYS if key not in arch]
    elif "architecture_plans" in plan:
        problems.append("architecture_plans is not a dict")
    configurations = (plan.get("pretrain_plan") or {}).get("configurations") if isinstance(plan.get("pretrain_plan"), Mapping) else None
    if "pretrain_plan" in plan:
        if not isinstance(configurations, Mapping) or not configurations:
            problems.append("pretrain_plan.configurations is empty")
        else:
            first = next(iter(configurations.values()))
            problems += [f"no pretrain_plan.configurations.<first>.{key}" for key in ("spacing", "patch_size")
                         if not isinstance(first, Mapping) or key not in first]
    return problems


def pretraining_configuration(plan: Mapping[str, Any]) -> Dict[str, Any]:
    """The pretraining configuration (the first of ``pretrain_plan.configurations``, as nnU-Net master takes it)."""
    return dict(next(iter(plan["pretrain_plan"]["configurations"].values())))
