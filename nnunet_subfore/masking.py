"""HU-based foreground masking for masked image modeling (MIM) on CT.

The method of "HU-based Foreground Masking for 3D Medical Masked Image Modeling" (see
``docs/masking.md``): a patch is partitioned into non-overlapping ``s x s x s`` subvolumes; a
subvolume is *foreground* when the mean of its windowed intensity
``u = clip((HU - a_min) / (a_max - a_min), 0, 1)`` is at least ``threshold``; a fraction of the
foreground subvolumes is masked (filled with noise or zeros) and the network reconstructs them.

Everything here is pure torch, vectorized over the batch, runs on the batch's device and knows
nothing of nnU-Net. Random draws take an optional :class:`torch.Generator` for reproducibility.

The criterion is linear in the intensities up to the clipping, so it can be evaluated directly on
intensities in another linear scale (nnU-Net's z-scored CT) by passing the window mapped into that
scale (:mod:`nnunet_subfore.intensity` does that from the plans).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from nnunet_subfore.recipe import PAPER_MASKING, MaskingRecipe, check_masking_settings

# The paper's settings, as defaults of the functions below (defined once, in nnunet_subfore.recipe).
DEFAULT_WINDOW: Tuple[float, float] = PAPER_MASKING.window
DEFAULT_THRESHOLD = PAPER_MASKING.threshold
DEFAULT_SUBVOLUME_SIZE = PAPER_MASKING.subvolume_size
DEFAULT_RATIO = PAPER_MASKING.ratio


def _check_volume(x: torch.Tensor, subvolume_size: int, name: str = "input") -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} must have shape (B, C, D, H, W), got shape {tuple(x.shape)}.")
    check_masking_settings(subvolume_size=subvolume_size)
    bad = [int(side) for side in x.shape[2:] if side % subvolume_size]
    if bad:
        raise ValueError(
            f"The spatial shape {tuple(x.shape[2:])} of {name} is not divisible by the subvolume size "
            f"{subvolume_size} (offending sides: {bad}). Use a patch size whose sides are multiples of "
            f"{subvolume_size}."
        )


def _check_window(window: Sequence[float]) -> Tuple[float, float]:
    return check_masking_settings(window=window)["window"]


def threshold_in_input_units(window: Sequence[float] = DEFAULT_WINDOW, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The intensity (in the window's units) of a uniform subvolume that sits exactly on the threshold.

    With the paper's window (-175, 250) HU and threshold 0.1 this is -132.5 HU.
    """
    lo, hi = _check_window(window)
    return lo + threshold * (hi - lo)


def windowed_intensity(x: torch.Tensor, window: Sequence[float] = DEFAULT_WINDOW) -> torch.Tensor:
    """``clip((x - low) / (high - low), 0, 1)``: the paper's normalized intensity in [0, 1]."""
    lo, hi = _check_window(window)
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)


def subvolume_view(x: torch.Tensor, subvolume_size: Union[int, Sequence[int]]) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, C, D/sd, sd, H/sh, sh, W/sw, sw): a view of the subvolumes, no copy.

    ``subvolume_size`` is one side ``s`` for cubes or ``(sd, sh, sw)``. A subvolume mask ``m``
    (B, nd, nh, nw) broadcasts against the view as ``m[:, None, :, None, :, None, :, None]`` (see
    :func:`broadcastable_subvolume_mask`), which lets masks act on voxels without ever materializing
    a voxel mask. ``x`` must be contiguous.
    """
    sd, sh, sw = (subvolume_size,) * 3 if isinstance(subvolume_size, int) else subvolume_size
    b, c, d, h, w = x.shape
    return x.view(b, c, d // sd, sd, h // sh, sh, w // sw, sw)


def broadcastable_subvolume_mask(subvolume_mask: torch.Tensor) -> torch.Tensor:
    """(B, nd, nh, nw) -> (B, 1, nd, 1, nh, 1, nw, 1), broadcasting against :func:`subvolume_view`."""
    return subvolume_mask[:, None, :, None, :, None, :, None]


def _clamped_channel0(x: torch.Tensor, lo: float, hi: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Channel 0 of ``x`` clamped to [lo, hi], in float32 or float64 (half precision would overflow the
    block sums); written into channel 0 of ``out`` when given and ``x`` is single or double precision."""
    if x.dtype in (torch.float32, torch.float64):
        return torch.clamp(x[:, 0], lo, hi, out=None if out is None else out[:, 0])
    return torch.clamp(x[:, 0].float(), lo, hi)


def _block_sums(clamped: torch.Tensor, subvolume_size: int) -> torch.Tensor:
    """Per-subvolume sums of channel 0 already clamped, (B, D, H, W) -> (B, D/s, H/s, W/s).

    The block sums reduce one block axis at a time, the outermost first (16 planes added element-wise
    over contiguous rows, the one pass over the whole batch), then the small remainder; on CPU that is
    2-3x faster than reducing the three axes at once or ``avg_pool3d``, and about 10 % faster than
    starting innermost.
    """
    b, d, h, w = clamped.shape
    s = subvolume_size
    return clamped.view(b, d // s, s, h // s, s, w // s, s).sum(2).sum(5).sum(3)


def otsu_thresholds(values: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of each row of ``values`` (B, N): the split of the sorted row that maximizes the
    between-class variance, as the midpoint between the two classes' nearest values; ``-inf`` for a row
    with a single distinct value (nothing to split). Vectorized over the rows."""
    v, _ = values.double().sort(dim=1)
    n = v.shape[1]
    if n < 2:
        return torch.full(v.shape[:1], -torch.inf, dtype=torch.float64, device=v.device)
    below = v.cumsum(1)[:, :-1]
    k = torch.arange(1, n, device=v.device, dtype=torch.float64)
    mean_low = below / k
    mean_high = (v.sum(1, keepdim=True) - below) / (n - k)
    between = (k / n) * (1 - k / n) * (mean_low - mean_high) ** 2
    distinct = v[:, 1:] > v[:, :-1]
    between = torch.where(distinct, between, torch.full_like(between, -1.0))
    split = between.argmax(1, keepdim=True)
    threshold = ((v.gather(1, split) + v.gather(1, split + 1)) / 2)[:, 0]
    return torch.where(distinct.any(1), threshold, torch.full_like(threshold, -torch.inf))


def nonzero_subvolumes(x: torch.Tensor, subvolume_size: int = DEFAULT_SUBVOLUME_SIZE,
                       min_share: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The criterion for non-CT data: bool (B, D/s, H/s, W/s), True where at least ``min_share`` of the
    subvolume's voxels lie inside the nonzero region (any channel != 0).

    nnU-Net's ``ZScoreNormalization`` with ``use_mask_for_norm`` (BraTS, most MRI) leaves the voxels outside
    the nonzero region at exactly 0, and its data loader pads with 0, so this region is the brain or body.
    """
    _check_volume(x, subvolume_size, "x")
    s = subvolume_size
    inside = (x != 0).any(1).to(torch.float32)
    share = _block_sums(inside.contiguous(), s) / s ** 3
    return share >= min_share


def _fixed_rule(sums: torch.Tensor, s: int, lo: float, hi: float, threshold: float) -> torch.Tensor:
    """The paper's: mean(clip((x - lo) / (hi - lo), 0, 1)) >= t  <=>  sum(clamp(x, lo, hi)) >= (lo + t (hi - lo)) s^3,
    so the criterion needs no shifted or scaled copy."""
    return sums >= (lo + threshold * (hi - lo)) * s ** 3


def _otsu_rule(sums: torch.Tensor, s: int, lo: float, hi: float, threshold: float) -> torch.Tensor:
    """The block means of the windowed intensity against max(Otsu's threshold of the patch's block means, t)."""
    means = (sums.double() / s ** 3 - lo) / (hi - lo)
    patch_threshold = otsu_thresholds(means.flatten(1)).clamp(min=float(threshold))
    return means >= patch_threshold[:, None, None, None]


def _windowed_criterion(rule: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A criterion on the block sums of channel 0 clamped to the window (into channel 0 of ``out`` when given)."""

    def criterion(x: torch.Tensor, subvolume_size: int, window: Sequence[float], threshold: float,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
        lo, hi = _check_window(window)
        clamped = _clamped_channel0(x, lo, hi, out=out)  # a channel slice of a contiguous batch is fine
        sums = _block_sums(clamped if out is not None else clamped.contiguous(), subvolume_size)
        return rule(sums, subvolume_size, lo, hi, threshold)

    criterion.__doc__ = rule.__doc__
    return criterion


def _nonzero_criterion(x: torch.Tensor, subvolume_size: int, window: Sequence[float], threshold: float,
                       out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`nonzero_subvolumes` with ``threshold`` as the share (``window`` and ``out`` unused)."""
    return nonzero_subvolumes(x, subvolume_size, threshold)


#: The foreground criteria by name (their names and meanings: :data:`nnunet_subfore.recipe.CRITERIA`). Each maps
#: a batch (B, C, D, H, W), the subvolume side, the window and the threshold (and optionally a batch-sized
#: scratch buffer) to the bool (B, D/s, H/s, W/s) foreground subvolumes. The one place a criterion is chosen.
FOREGROUND_CRITERIA: Dict[str, Callable[..., torch.Tensor]] = {
    "fixed": _windowed_criterion(_fixed_rule),
    "otsu": _windowed_criterion(_otsu_rule),
    "nonzero": _nonzero_criterion,
}


def windowed_block_means(x: torch.Tensor, subvolume_size: int = DEFAULT_SUBVOLUME_SIZE,
                         window: Sequence[float] = DEFAULT_WINDOW) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, D/s, H/s, W/s): the mean windowed intensity of each subvolume of channel 0, in [0, 1]
    (what the criteria compare with their threshold)."""
    _check_volume(x, subvolume_size, "x")
    lo, hi = _check_window(window)
    sums = _block_sums(_clamped_channel0(x, lo, hi).contiguous(), subvolume_size)
    return (sums.double() / subvolume_size ** 3 - lo) / (hi - lo)


def foreground_subvolumes(
    hu: torch.Tensor,
    subvolume_size: int = DEFAULT_SUBVOLUME_SIZE,
    window: Sequence[float] = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    criterion: str = PAPER_MASKING.criterion,
) -> torch.Tensor:
    """Which subvolumes are foreground.

    Args:
        hu: float tensor (B, C, D, H, W) of intensities in the units of ``window`` (Hounsfield
            units for the default window). Only channel 0 is used for the criterion.
        subvolume_size: side length ``s`` of the cubic subvolumes; D, H and W must be multiples.
        window: (low, high) intensity window; the paper's authors use (-175, 250) HU.
        threshold: lambda; a subvolume is foreground when the mean of the *windowed* (clipped)
            intensities is ``>= threshold``. (The mean of clipped values, not the window of the mean.)
        criterion: ``"fixed"`` (the paper's) or ``"otsu"``: per patch (batch element), the threshold is
            Otsu's over the patch's block means (the split of largest between-class variance: between
            air and body in a patch of air and soft tissue, between fat and soft tissue where fat
            blocks make the larger contrast), never below ``threshold``, so what the fixed criterion
            calls background stays background; a uniform patch keeps ``threshold``. ``"nonzero"`` (non-CT):
            :func:`nonzero_subvolumes` with ``threshold`` as the share (``window`` unused).

    Returns:
        bool tensor (B, D/s, H/s, W/s), True for foreground subvolumes.
    """
    _check_volume(hu, subvolume_size, "hu")
    check_masking_settings(criterion=criterion)
    return FOREGROUND_CRITERIA[criterion](hu, subvolume_size, window, threshold)


def sample_subvolume_mask(
    candidates: torch.Tensor,
    ratio: float = DEFAULT_RATIO,
    selection: str = PAPER_MASKING.selection,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Choose the subvolumes to mask.

    Args:
        candidates: bool tensor (B, nd, nh, nw): the foreground subvolumes.
        ratio: masking ratio r in [0, 1].
        selection: ``"bernoulli"`` masks each foreground subvolume independently with probability
            ``ratio`` (the authors' code); ``"exact"`` masks exactly ``round(ratio * n_foreground)``
            foreground subvolumes per sample, uniformly; ``"random"`` ignores ``candidates`` and masks
            each subvolume with probability ``ratio`` (the random-masking baseline of the ablation).
        generator: optional torch.Generator on the device of ``candidates``.

    Returns:
        bool tensor shaped like ``candidates``. Outside ``"random"`` it is never True where
        ``candidates`` is False.
    """
    check_masking_settings(selection=selection, ratio=ratio)
    if candidates.dtype != torch.bool:
        raise ValueError(f"candidates must be a bool tensor, got dtype {candidates.dtype}.")
    scores = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    if selection == "random":
        return scores < ratio
    if selection == "bernoulli":
        return (scores < ratio) & candidates
    # exact: rank the candidates by their random score; non-candidates sort last.
    flat_scores = torch.where(candidates, scores, torch.full_like(scores, 2.0)).flatten(1)
    n_mask = torch.round(candidates.flatten(1).sum(1).double() * ratio).long()
    ranks = flat_scores.argsort(dim=1).argsort(dim=1)
    return (ranks < n_mask[:, None]).view_as(candidates) & candidates


def expand_subvolume_mask(subvolume_mask: torch.Tensor, subvolume_size: int) -> torch.Tensor:
    """(B, nd, nh, nw) subvolume mask -> (B, 1, D, H, W) bool voxel mask (one byte per voxel)."""
    b, nd, nh, nw = subvolume_mask.shape
    s = subvolume_size
    return (
        subvolume_mask[:, None, :, None, :, None, :, None]
        .expand(b, 1, nd, s, nh, s, nw, s)
        .reshape(b, 1, nd * s, nh * s, nw * s)
    )


def fill_masked(
    x: torch.Tensor,
    voxel_mask: torch.Tensor,
    fill: str = PAPER_MASKING.fill,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Replace the masked voxels of ``x`` (all channels) with N(0, 1) noise or zeros; returns a new tensor."""
    check_masking_settings(fill=fill)
    if fill == "zero":
        return x.masked_fill(voxel_mask, 0.0)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(voxel_mask, noise, x)


@dataclass
class MaskedBatch:
    """The result of masking one batch.

    Attributes:
        masked: the network input, ``x`` with the masked subvolumes filled.
        subvolume_mask: bool (B, nd, nh, nw), True on masked subvolumes.
        foreground: bool (B, nd, nh, nw), True on foreground subvolumes.
        subvolume_size: side length of the subvolumes.
        voxel_mask: bool (B, 1, D, H, W), True on masked voxels (broadcasts over channels). Built on
            first access only: the trainers never need it (one byte per voxel of the batch).
    """

    masked: torch.Tensor
    subvolume_mask: torch.Tensor
    foreground: torch.Tensor
    subvolume_size: int

    @cached_property
    def voxel_mask(self) -> torch.Tensor:
        return expand_subvolume_mask(self.subvolume_mask, self.subvolume_size)

    @property
    def masked_fraction(self) -> torch.Tensor:
        """Share of the voxels that were masked (a 0-d float tensor on the batch's device)."""
        return self.subvolume_mask.float().mean()


class ForegroundMasker:
    """Masks batches by the HU foreground criterion.

    Args:
        subvolume_size: side length of the cubic subvolumes (paper: 16).
        window: (low, high) intensity window *in the units of the batches it will see*. For raw HU
            the paper's (-175, 250); for nnU-Net-normalized CT use
            :meth:`nnunet_subfore.intensity.CTIntensityMapping.window_to_normalized`.
        threshold: lambda (paper: 0.1).
        ratio: masking ratio (paper: 0.6).
        selection: ``"bernoulli"``, ``"exact"`` or ``"random"`` (see :func:`sample_subvolume_mask`).
        fill: ``"noise"`` (N(0, 1), the authors' code) or ``"zero"``.
        criterion: ``"fixed"`` (the paper's), ``"otsu"`` or ``"nonzero"`` (see :func:`foreground_subvolumes`).
    """

    def __init__(
        self,
        subvolume_size: int = DEFAULT_SUBVOLUME_SIZE,
        window: Sequence[float] = DEFAULT_WINDOW,
        threshold: float = DEFAULT_THRESHOLD,
        ratio: float = DEFAULT_RATIO,
        selection: str = PAPER_MASKING.selection,
        fill: str = PAPER_MASKING.fill,
        criterion: str = PAPER_MASKING.criterion,
    ) -> None:
        checked = check_masking_settings(window=window, subvolume_size=subvolume_size, ratio=ratio,
                                         selection=selection, fill=fill, criterion=criterion)
        self.subvolume_size = checked["subvolume_size"]
        self.window = checked["window"]
        self.threshold = float(threshold)
        self.ratio = float(ratio)
        self.selection = selection
        self.fill = fill
        self.criterion = criterion

    @classmethod
    def from_recipe(cls, recipe: MaskingRecipe = PAPER_MASKING, window: Optional[Sequence[float]] = None,
                    selection: Optional[str] = None) -> "ForegroundMasker":
        """A masker with ``recipe``'s settings.

        Args:
            recipe: the settings (default: the paper's).
            window: the recipe's HU window expressed in the units of the batches (e.g.
                :meth:`nnunet_subfore.intensity.CTIntensityMapping.window_to_normalized`); default: the
                recipe's window as is (batches in HU).
            selection: override the recipe's selection (``"random"`` for the ablation).
        """
        return cls(recipe.subvolume_size, recipe.window if window is None else window, recipe.threshold,
                   recipe.ratio, recipe.selection if selection is None else selection, recipe.fill, recipe.criterion)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(subvolume_size={self.subvolume_size}, window={self.window}, "
            f"threshold={self.threshold}, ratio={self.ratio}, selection={self.selection!r}, fill={self.fill!r}"
            + ("" if self.criterion == "fixed" else f", criterion={self.criterion!r}") + ")"
        )

    def foreground(self, x: torch.Tensor) -> torch.Tensor:
        """The criterion alone: bool (B, D/s, H/s, W/s), True on the subvolumes that :meth:`__call__` may mask
        (outside ``"random"`` selection); the same as ``self(x).foreground``, with no draws."""
        return foreground_subvolumes(x, self.subvolume_size, self.window, self.threshold, self.criterion)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> MaskedBatch:
        """Mask a batch (B, C, D, H, W); the criterion reads channel 0, the mask applies to all channels.

        The same result as :func:`foreground_subvolumes`, :func:`sample_subvolume_mask` and
        :func:`fill_masked` in turn (including the random draws for a given ``generator``), with one
        batch-sized allocation in all: the output buffer first holds channel 0 clamped to the
        window for the criterion, then the filled batch; masks act through
        :func:`subvolume_view` and are never expanded to voxels. Zero fill multiplies by the
        complement of the mask (a masked voxel of negative intensity becomes -0.0, equal to 0.0;
        inputs must be finite).
        """
        _check_volume(x, self.subvolume_size, "x")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating point tensor, got dtype {x.dtype}.")
        x = x.contiguous()
        s = self.subvolume_size
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        fg = FOREGROUND_CRITERIA[self.criterion](x, s, self.window, self.threshold, out=out)
        sub = sample_subvolume_mask(fg, self.ratio, self.selection, generator)
        x8, out8, m = subvolume_view(x, s), subvolume_view(out, s), broadcastable_subvolume_mask(sub)
        if self.fill == "noise":
            out.normal_(generator=generator)  # the same draws as torch.randn(x.shape, generator=generator)
            torch.where(m, out8, x8, out=out8)
        else:
            torch.mul(x8, ~m, out=out8)
        return MaskedBatch(out, sub, fg, s)
