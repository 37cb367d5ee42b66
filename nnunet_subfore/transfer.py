"""Which tensors of a network are its encoder, and the encoder-only transfer recipe.

Encoder-only transfer (nnU-Net master's pretrained fine-tuning, nnssl's adaptation plans) takes the
encoder and the stem / input projection from a pretrained checkpoint and leaves every other tensor as
the target network initializes it (nnU-Net's ``InitWeights_He`` for its CNNs, MONAI's own
initialization for SwinUNETR and UNETR). The encoder of each backbone:

- ``cnn`` (dynamic-network-architectures ``PlainConvUNet`` / ``ResidualEncoderUNet``): what the network
  names itself, ``key_to_encoder`` (``encoder.stages``), ``key_to_stem`` (``encoder.stages.0`` or
  ``encoder.stem``) and ``keys_to_in_proj``, under every path the modules appear at: the decoder keeps
  a reference to the encoder, so the same tensors appear again as ``decoder.encoder.*``.
- ``swinunetr``: the Swin transformer ``backbone.swinViT`` (patch embedding included). MONAI's
  ``encoder1``..``encoder4`` and ``encoder10`` are residual conv blocks on the skip connections (the
  input image and the Swin stages' outputs, each feeding one decoder stage); no other block reads their
  output, so they belong to the decoding path and start fresh. That is also how the Swin UNETR
  self-supervised weights are published and loaded (MONAI's ``SwinUNETR.load_from`` fills ``swinViT``
  only).
- ``unetr``: the ViT ``backbone.vit`` (patch and position embeddings included), for the same reason:
  ``encoder1``..``encoder4`` are conv/up-sampling blocks on the input and on ViT hidden states that feed
  the decoder.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Mapping, Tuple

import torch
from torch import nn

from nnunet_subfore.networks import CNN_BACKBONE

#: The MONAI backbones' encoder modules (paths in a :class:`networks.SubForeNetwork`).
MONAI_ENCODER_MODULES: Dict[str, Tuple[str, ...]] = {
    "swinunetr": ("backbone.swinViT",),
    "unetr": ("backbone.vit",),
}

#: The checkpoint entry that says how adapt-checkpoint made a checkpoint (plain JSON-able values).
TRANSFER_RECORD_KEY = "subfore_transfer"

#: The transfer recipes of adapt-checkpoint: every tensor but the head, or the encoder only.
TRANSFER_RECIPES = ("full", "encoder-only")


def encoder_key_prefixes(backbone: str, network: nn.Module) -> Tuple[str, ...]:
    """The state-dict key prefixes (ending in ``.``) of ``network``'s encoder, stem and input projection.

    Args:
        backbone: ``"cnn"``, ``"swinunetr"`` or ``"unetr"`` (:attr:`networks.TrainerNetwork.backbone`).
        network: the network; a CNN names its encoder itself (``key_to_encoder``, ``key_to_stem``,
            ``keys_to_in_proj`` of dynamic-network-architectures), and each module counts under every
            path it appears at (``decoder.encoder.*`` for the decoder's reference to the encoder).
    """
    if backbone != CNN_BACKBONE:
        if backbone not in MONAI_ENCODER_MODULES:
            raise ValueError(f"backbone must be one of {(CNN_BACKBONE, *MONAI_ENCODER_MODULES)}, got {backbone!r}.")
        return tuple(f"{m}." for m in MONAI_ENCODER_MODULES[backbone])
    try:
        named = (network.key_to_encoder, network.key_to_stem, *network.keys_to_in_proj)
    except AttributeError as e:
        raise ValueError(f"{type(network).__name__} does not name its encoder (key_to_encoder, key_to_stem, "
                         f"keys_to_in_proj of dynamic-network-architectures >= 0.4.4).") from e
    modules = {id(network.get_submodule(name)) for name in named}
    paths = [f"{name}." for name, module in network.named_modules(remove_duplicate=False) if id(module) in modules]
    # the stem and the input projection usually lie inside the encoder: keep the outermost prefixes only
    return tuple(dict.fromkeys(p for p in paths if not any(p != q and p.startswith(q) for q in paths)))


def is_encoder_key(key: str, prefixes: Tuple[str, ...]) -> bool:
    """Whether ``key`` lies under one of ``prefixes`` (:func:`encoder_key_prefixes`)."""
    return key.startswith(tuple(prefixes))


def key_group(key: str) -> str:
    """The module group a key is counted under in summaries: its first two names (``decoder.stages``,
    ``backbone.swinViT``, ``decoder.encoder``)."""
    return ".".join(key.split(".")[:2])


def count_groups(keys: Iterable[str]) -> Dict[str, int]:
    """Tensors per :func:`key_group`, in the order the groups first appear."""
    return dict(Counter(key_group(k) for k in keys))


def encoder_only_weights(
    checkpoint_state: Mapping[str, torch.Tensor],
    network_state: Mapping[str, torch.Tensor],
    prefixes: Tuple[str, ...],
    head_marker: str,
) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """The weights of an encoder-only transfer: encoder tensors from the checkpoint, the others from the network.

    Args:
        checkpoint_state: the (adapted) pretrained state dict; it must hold every encoder key of the network.
        network_state: the target network's freshly initialized state dict (its decoder is what it gets).
        prefixes: the encoder's key prefixes (:func:`encoder_key_prefixes`).
        head_marker: keys containing it are the output heads, left out (the fine-tuning trainer makes its own).

    Returns:
        (weights, keys from the checkpoint, keys freshly initialized), in the network's key order.
    """
    weights: Dict[str, torch.Tensor] = {}
    encoder: List[str] = []
    fresh: List[str] = []
    for key, value in network_state.items():
        if head_marker in key:
            continue
        if is_encoder_key(key, prefixes):
            if key not in checkpoint_state:
                raise ValueError(f"The checkpoint has no {key}, part of the encoder ({prefixes}).")
            weights[key] = checkpoint_state[key]
            encoder.append(key)
        else:
            weights[key] = value.detach().clone()
            fresh.append(key)
    return weights, encoder, fresh


def alias_groups(network: nn.Module) -> List[Tuple[str, ...]]:
    """The state-dict keys that name one tensor, in groups of two or more.

    dynamic-network-architectures registers some modules under two paths: the decoder keeps the encoder
    (``decoder.encoder.*`` = ``encoder.*``) and a convolution block keeps its convolution twice
    (``...convs.0.conv.*`` = ``...convs.0.all_modules.0.*``); nnssl's checkpoints hold every alias.
    """
    by_tensor: Dict[int, List[str]] = {}
    for key, value in network.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(value), []).append(key)
    return [tuple(keys) for keys in by_tensor.values() if len(keys) > 1]


def complete_aliases(
    state: Mapping[str, torch.Tensor], groups: Iterable[Tuple[str, ...]]
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``state`` with every alias of a group present that it holds under one of the group's names.

    Args:
        state: a checkpoint's state dict (not modified).
        groups: :func:`alias_groups` of the network it is meant for.

    Returns:
        (the completed state dict, the keys filled in).

    Raises:
        ValueError: names of one tensor hold different values in ``state`` (the checkpoint is inconsistent:
            which one would a loader take?).
    """
    completed = dict(state)
    filled: List[str] = []
    for group in groups:
        present = [k for k in group if k in state]
        if not present:
            continue
        first = state[present[0]]
        for key in present[1:]:
            if state[key].shape != first.shape or not torch.equal(state[key], first):
                raise ValueError(f"{present[0]} and {key} name one tensor of the network but hold different values "
                                 f"in the checkpoint.")
        for key in group:
            if key not in completed:
                completed[key] = first
                filled.append(key)
    return completed, filled
