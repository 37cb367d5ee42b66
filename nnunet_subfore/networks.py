"""The networks: MONAI UNETR / SwinUNETR built from nnU-Net plans with nnU-Net's head naming, and
nnU-Net's own CNNs (``PlainConvUNet``, ``ResidualEncoderUNet``) built from the plans by nnU-Net's builder.

The networks are MONAI's reference implementations, unchanged. :class:`SubForeNetwork` only moves
MONAI's output block (``out``) to ``decoder.seg_layers.0`` so that nnU-Net's stock
``-pretrained_weights`` loader, which skips every key containing ``.seg_layers.``, transfers
everything but the head between a pretraining network (output = reconstructed image) and a
fine-tuning network (output = class logits) of the same backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

BACKBONES = ("swinunetr", "unetr")

#: The paper's architectures (docs/workflow.md, "The paper's recipe"): SwinUNETR feature 48 with use_v2
#: (the authors' code), UNETR ViT-B/16 with feature size 16.
PAPER_ARCHITECTURES: Dict[str, dict] = {
    "swinunetr": dict(
        feature_size=48,
        depths=(2, 2, 2, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        patch_size=2,
        use_v2=True,
        norm_name="instance",
    ),
    "unetr": dict(
        feature_size=16,
        hidden_size=768,
        mlp_dim=3072,
        num_heads=12,
        proj_type="conv",
        norm_name="instance",
        res_block=True,
    ),
}

#: Tiny versions for tests, the demo and CPU benchmarks (32^3 patches; batch norm because a
#: SwinUNETR bottleneck at 32^3 is a single voxel, which instance norm cannot normalize).
TINY_ARCHITECTURES: Dict[str, dict] = {
    "swinunetr": dict(
        feature_size=12,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=4,
        patch_size=2,
        use_v2=True,
        norm_name="batch",
    ),
    "unetr": dict(
        feature_size=8,
        hidden_size=48,
        mlp_dim=96,
        num_heads=4,
        proj_type="conv",
        norm_name="batch",
        res_block=True,
    ),
}

#: UNETR's ViT patch (token) side: one token per 16^3 voxels.
UNETR_TOKEN_SIDE = 16

#: Every side of the input must be divisible by this (SwinUNETR: 2**5 from patch size 2 and four
#: merges; UNETR: its ViT patch size).
PATCH_DIVISORS: Dict[str, int] = {"swinunetr": 32, "unetr": UNETR_TOKEN_SIDE}


def token_grid(patch_size: Sequence[int]) -> Tuple[int, int, int]:
    """UNETR's token grid for a patch: (D, H, W) // 16 per side (the layout of its position embeddings)."""
    return tuple(int(p) // UNETR_TOKEN_SIDE for p in patch_size)


def _check_backbone(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}.")
    return backbone


class SubForeNetwork(nn.Module):
    """A MONAI segmentation network whose output block is registered as ``decoder.seg_layers.0``.

    Args:
        backbone: a MONAI ``UNETR`` or ``SwinUNETR`` (its ``out`` block becomes the head).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        if not isinstance(getattr(backbone, "out", None), nn.Module):
            raise ValueError(f"{type(backbone).__name__} has no output block 'out' to use as the head.")
        head = backbone.out
        backbone.out = nn.Identity()
        self.backbone = backbone
        self.decoder = nn.Module()
        self.decoder.seg_layers = nn.ModuleList([head])
        # nnU-Net's set_deep_supervision_enabled sets this attribute; these networks have no deep supervision.
        self.decoder.deep_supervision = False

    @property
    def head(self) -> nn.Module:
        return self.decoder.seg_layers[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def check_patch_size(
    backbone: str, patch_size: Sequence[int], architecture: Optional[dict] = None
) -> Tuple[int, int, int]:
    """Validate a 3D patch size for ``backbone``; returns it as a tuple of ints.

    Args:
        backbone: ``"swinunetr"`` or ``"unetr"``.
        patch_size: (D, H, W).
        architecture: the constructor arguments (default: the paper's); SwinUNETR with instance
            normalization cannot take a 32x32x32 patch (its bottleneck would be a single voxel).
    """
    _check_backbone(backbone)
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3:
        raise ValueError(f"{backbone} needs a 3D patch size, got {patch} (use a 3d configuration such as 3d_fullres).")
    divisor = PATCH_DIVISORS[backbone]
    if any(p <= 0 or p % divisor for p in patch):
        raise ValueError(
            f"Patch size {patch} is invalid for {backbone}: every side must be a positive multiple of {divisor}."
        )
    arch = PAPER_ARCHITECTURES[backbone] if architecture is None else architecture
    if backbone == "swinunetr" and patch == (32, 32, 32) and "instance" in str(arch.get("norm_name", "instance")):
        raise ValueError(
            "Patch size (32, 32, 32) is invalid for SwinUNETR with instance normalization: its bottleneck is a "
            "single voxel, which instance normalization cannot normalize. Use at least one side of 64."
        )
    return patch


def valid_patch_size(planned: Sequence[int], divisor: Union[int, Sequence[int]]) -> Tuple[int, int, int]:
    """The nearest patch whose sides are multiples of ``divisor``, preferring not to grow.

    Each side is rounded down to a multiple of ``divisor``; a side smaller than ``divisor`` becomes
    ``divisor`` (nnU-Net pads images smaller than the patch).

    Args:
        planned: the patch size from the plans (3 sides).
        divisor: what each side must be divisible by (see :data:`PATCH_DIVISORS`; the masking adds its
            subvolume size: use ``math.lcm``); one per side for a CNN with anisotropic strides
            (:func:`cnn_patch_divisors`).
    """
    planned = tuple(int(p) for p in planned)
    if len(planned) != 3:
        raise ValueError(
            f"A 3D patch size is needed, got {planned}: SubFore trainers run 3D configurations (e.g. 3d_fullres)."
        )
    divisors = [int(divisor)] * 3 if isinstance(divisor, (int, float)) else [int(d) for d in divisor]
    if len(divisors) != 3 or any(d < 1 for d in divisors):
        raise ValueError(f"divisor must be a positive integer (or one per side), got {divisor}.")
    patch = [max(d, (p // d) * d) for p, d in zip(planned, divisors)]
    return tuple(patch)


def patch_divisor(backbone: str, subvolume_size: Optional[int] = None) -> int:
    """What every patch side must be divisible by: the backbone's divisor and, for MIM, the subvolume size."""
    divisor = PATCH_DIVISORS[_check_backbone(backbone)]
    return math.lcm(divisor, int(subvolume_size)) if subvolume_size else divisor


def build_network(
    backbone: str,
    patch_size: Sequence[int],
    in_channels: int,
    out_channels: int,
    architecture: Optional[dict] = None,
) -> SubForeNetwork:
    """Build a MONAI SwinUNETR or UNETR wrapped in :class:`SubForeNetwork`.

    Args:
        backbone: ``"swinunetr"`` or ``"unetr"``.
        patch_size: the input patch (D, H, W); UNETR's position embeddings are sized by it,
            SwinUNETR only requires divisibility.
        in_channels: number of input channels.
        out_channels: output channels (input channels for MIM reconstruction, classes for segmentation).
        architecture: keyword arguments for the MONAI constructor; defaults to
            :data:`PAPER_ARCHITECTURES` ``[backbone]``. Pretraining and fine-tuning must use the same.
    """
    patch = check_patch_size(backbone, patch_size, architecture)
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
    kwargs = dict(PAPER_ARCHITECTURES[backbone] if architecture is None else architecture)
    if backbone == "swinunetr":
        from monai.networks.nets import SwinUNETR

        if kwargs.get("feature_size", 24) % 12:
            raise ValueError(f"SwinUNETR feature_size must be divisible by 12, got {kwargs['feature_size']}.")
        net = SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=3, **kwargs)
    else:
        from monai.networks.nets import UNETR

        net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=patch, spatial_dims=3, **kwargs)
    return SubForeNetwork(net)


#: Parameter keys that see the input channels directly (their dim 1 is the number of input channels).
STEM_KEYS: Dict[str, Tuple[str, ...]] = {
    "swinunetr": (
        "backbone.swinViT.patch_embed.proj.weight",
        "backbone.encoder1.layer.conv1.conv.weight",
        "backbone.encoder1.layer.conv3.conv.weight",
    ),
    "unetr": (
        "backbone.vit.patch_embedding.patch_embeddings.weight",
        "backbone.encoder1.layer.conv1.conv.weight",
        "backbone.encoder1.layer.conv3.conv.weight",
    ),
}

#: UNETR's learned position embeddings (1, n_tokens, hidden), sized by the patch.
POSITION_EMBEDDING_KEY = "backbone.vit.patch_embedding.position_embeddings"


def backbone_of_state_dict(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Guess which backbone a SubFore state dict belongs to (None if none): ``"swinunetr"``, ``"unetr"`` or
    ``"cnn"`` (a dynamic-network-architectures U-Net that nnU-Net plans: encoder stages and a decoder)."""
    if any(k.startswith("backbone.swinViT.") for k in state_dict):
        return "swinunetr"
    if any(k.startswith("backbone.vit.") for k in state_dict):
        return "unetr"
    if any(k.startswith("encoder.stages.") for k in state_dict) and any(k.startswith("decoder.") for k in state_dict):
        return CNN_BACKBONE
    return None


@dataclass
class TrainerNetwork:
    """The network a trainer would train on some plans, and what checkpoint adaptation needs to know of it.

    Attributes:
        network: the built network (untrained).
        backbone: ``"swinunetr"``, ``"unetr"`` or ``"cnn"``.
        token_grid: UNETR's token grid (:func:`token_grid` of the patch); None for other backbones.
        stem_keys: the state-dict keys whose dim 1 is the number of input channels (default:
            :data:`STEM_KEYS` of the backbone; for a CNN, :func:`cnn_stem_keys`).
        seed: the seed of torch's generator when the network was built (its initialization drew from it);
            None: not seeded.
    """

    network: nn.Module
    backbone: str
    token_grid: Optional[Tuple[int, int, int]]
    stem_keys: Optional[Tuple[str, ...]] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.stem_keys is None:
            self.stem_keys = cnn_stem_keys(self.network) if self.backbone == CNN_BACKBONE else STEM_KEYS[self.backbone]


# --------------------------------------------------------------------------------------------------
# nnU-Net's own CNNs (PlainConvUNet, ResidualEncoderUNet), built from the plans by nnU-Net's builder

#: The backbone name of the networks nnU-Net plans itself (dynamic-network-architectures U-Nets).
CNN_BACKBONE = "cnn"


def build_plans_network(configuration_manager, num_input_channels: int, num_output_channels: int,
                        deep_supervision: bool = False) -> nn.Module:
    """The network the plans describe (``network_arch_class_name`` + ``arch_kwargs``), built by nnU-Net's
    ``get_network_from_plans`` with nnU-Net's initialization: ``PlainConvUNet`` for ``nnUNetPlans``,
    ``ResidualEncoderUNet`` for the ``nnUNetResEncUNet{M,L,XL}Plans`` presets.

    Args:
        configuration_manager: nnU-Net's ``ConfigurationManager`` of the configuration.
        num_input_channels, num_output_channels: for MIM the output channels are the input channels.
        deep_supervision: nnU-Net's flag. It changes the forward's outputs, not the parameters: without it, the
            decoder's heads of the lower resolutions exist (checkpoints keep their layout) but take no part in the
            forward, and are frozen here (``requires_grad`` False), as DDP stops at parameters without a gradient
            ("Expected to have finished reduction ..."; found by the torchrun test of the CNN pretraining).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    network = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=deep_supervision,
    )
    if not deep_supervision:
        for head in list(network.decoder.seg_layers)[:-1]:
            head.requires_grad_(False)
    return network


def cnn_total_strides(arch_kwargs: dict) -> Tuple[int, ...]:
    """Per axis, the product of the plans' stage strides (``arch_kwargs['strides']``): the CNN's input sides
    must be divisible by it."""
    strides = arch_kwargs.get("strides")
    if not strides:
        raise ValueError("The plans' architecture has no 'strides': not a U-Net that nnU-Net planned.")
    rows = [[int(s)] * 3 if isinstance(s, (int, float)) else [int(v) for v in s] for s in strides]
    return tuple(math.prod(axis) for axis in zip(*rows))


def cnn_patch_divisors(arch_kwargs: dict, subvolume_size: Optional[int] = None) -> Tuple[int, ...]:
    """What each patch side must be divisible by for a planned CNN: its total stride and, for MIM, the
    masking's subvolume side (``lcm``)."""
    totals = cnn_total_strides(arch_kwargs)
    return tuple(math.lcm(t, int(subvolume_size)) if subvolume_size else t for t in totals)


def cnn_stem_keys(network: nn.Module) -> Tuple[str, ...]:
    """The weights that see the input channels, named by the network itself (``keys_to_in_proj`` of
    dynamic-network-architectures), wherever the state dict holds them (nnU-Net's decoders keep a
    reference to the encoder, so the stem appears under ``decoder.encoder.`` too)."""
    modules = getattr(network, "keys_to_in_proj", None)
    if not modules:
        raise ValueError(f"{type(network).__name__} names no input projection (keys_to_in_proj).")
    wanted = tuple(f"{m}.weight" for m in modules)
    return tuple(k for k in network.state_dict() if any(k == w or k.endswith("." + w) for w in wanted))
