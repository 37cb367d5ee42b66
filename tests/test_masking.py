"""The masking semantics (docs/masking.md) on crafted HU volumes."""

import pytest
import torch

from nnunet_subfore.masking import (
    ForegroundMasker,
    expand_subvolume_mask,
    fill_masked,
    foreground_subvolumes,
    sample_subvolume_mask,
    threshold_in_input_units,
    windowed_intensity,
)

S = 16


def blocks(values):
    """A (1, 1, 16*a, 16*b, 16*c) HU volume whose subvolumes are uniform with the given values."""
    v = torch.tensor(values, dtype=torch.float32)
    return v.repeat_interleave(S, 0).repeat_interleave(S, 1).repeat_interleave(S, 2)[None, None]


def test_threshold_is_minus_132_5_hu_for_the_paper_window():
    assert threshold_in_input_units((-175.0, 250.0), 0.1) == pytest.approx(-132.5)


def test_criterion_on_uniform_blocks_around_the_threshold():
    hu = blocks([[[-1000.0, -133.0], [-132.5, 40.0]]])
    fg = foreground_subvolumes(hu)
    assert fg.shape == (1, 1, 2, 2)
    assert fg[0, 0].tolist() == [[False, False], [True, True]]


def test_half_air_half_250_block_is_foreground_although_its_mean_hu_is_minus_375():
    hu = torch.full((1, 1, S, S, S), -1000.0)
    hu[..., S // 2:] = 250.0
    assert hu.mean().item() == pytest.approx(-375.0)
    # mean of clipped values: 0.5 * 0 + 0.5 * 1 = 0.5 >= 0.1
    assert foreground_subvolumes(hu).item() is True
    # the window of the mean would say background
    assert windowed_intensity(hu.mean()).item() < 0.1


def test_bright_outliers_saturate_at_one():
    hu = torch.full((1, 1, S, S, S), -1000.0)
    hu[0, 0, 0, 0, :8] = 3000.0  # 8 voxels of metal: u clipped to 1, mean 8/4096 < 0.1
    assert foreground_subvolumes(hu).item() is False


def test_sides_not_divisible_name_the_shape():
    with pytest.raises(ValueError, match=r"\(16, 16, 20\)"):
        foreground_subvolumes(torch.zeros(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match="B, C, D, H, W"):
        foreground_subvolumes(torch.zeros(16, 16, 16))


def _half_body(batch=8):
    """Batch of 64^3 volumes: x < 32 air (-1000 HU), x >= 32 soft tissue (40 HU)."""
    hu = torch.full((batch, 1, 64, 64, 64), -1000.0)
    hu[..., 32:] = 40.0
    return hu


@pytest.mark.parametrize("selection", ["bernoulli", "exact"])
def test_background_is_never_masked(selection):
    masker = ForegroundMasker(ratio=0.9, selection=selection)
    out = masker(_half_body(), generator=torch.Generator().manual_seed(0))
    assert out.foreground[..., :2].sum() == 0 and out.foreground[..., 2:].all()
    assert not out.voxel_mask[..., :32].any()
    assert out.voxel_mask[..., 32:].any()
    # air voxels are passed through untouched
    assert torch.equal(out.masked[..., :32], _half_body()[..., :32])


def test_bernoulli_ratio_statistically():
    fg = torch.ones(200, 4, 4, 4, dtype=torch.bool)
    fg[:, :, :, :2] = False  # half the subvolumes are candidates: 200 * 32 = 6400
    mask = sample_subvolume_mask(fg, 0.6, "bernoulli", torch.Generator().manual_seed(1))
    assert not (mask & ~fg).any()
    frac = mask.sum().item() / fg.sum().item()
    # binomial std for n=6400, p=0.6 is 0.006: 4 sigma
    assert abs(frac - 0.6) < 0.025


def test_exact_count_per_sample():
    gen = torch.Generator().manual_seed(2)
    fg = torch.rand(16, 3, 4, 5, generator=gen) < 0.5
    mask = sample_subvolume_mask(fg, 0.6, "exact", gen)
    n_fg = fg.flatten(1).sum(1)
    assert torch.equal(mask.flatten(1).sum(1), torch.round(n_fg.double() * 0.6).long())
    assert not (mask & ~fg).any()


def test_exact_differs_between_draws_and_is_reproducible():
    fg = torch.ones(1, 4, 4, 4, dtype=torch.bool)
    a = sample_subvolume_mask(fg, 0.5, "exact", torch.Generator().manual_seed(3))
    b = sample_subvolume_mask(fg, 0.5, "exact", torch.Generator().manual_seed(3))
    c = sample_subvolume_mask(fg, 0.5, "exact", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_baseline_reaches_background():
    out = ForegroundMasker(ratio=0.6, selection="random")(_half_body(), generator=torch.Generator().manual_seed(5))
    assert out.voxel_mask[..., :32].any()
    frac = out.subvolume_mask.float().mean().item()
    assert abs(frac - 0.6) < 0.05


def test_patch_without_foreground_gets_no_mask():
    air = torch.full((2, 1, 32, 32, 32), -1000.0)
    out = ForegroundMasker()(air)
    assert not out.voxel_mask.any()
    assert torch.equal(out.masked, air)


def test_zero_fill_and_noise_fill():
    hu = _half_body(2)
    gen = torch.Generator().manual_seed(6)
    zero = ForegroundMasker(ratio=1.0, fill="zero")(hu, generator=gen)
    assert (zero.masked[..., 32:] == 0).all()
    noise = ForegroundMasker(ratio=1.0, fill="noise")(hu, generator=gen)
    filled = noise.masked[..., 32:]
    assert abs(filled.mean().item()) < 0.01 and abs(filled.std().item() - 1.0) < 0.01
    assert torch.equal(noise.masked[..., :32], hu[..., :32])


def test_expand_matches_subvolume_layout():
    sub = torch.zeros(1, 2, 3, 4, dtype=torch.bool)
    sub[0, 1, 2, 3] = True
    vox = expand_subvolume_mask(sub, 4)
    assert vox.shape == (1, 1, 8, 12, 16)
    assert vox.sum() == 64 and vox[0, 0, 4:8, 8:12, 12:16].all()


def test_mask_applies_to_all_channels():
    x = torch.randn(1, 3, 16, 16, 16)
    vox = torch.ones(1, 1, 16, 16, 16, dtype=torch.bool)
    assert (fill_masked(x, vox, "zero") == 0).all()


def test_reproducible_with_generator():
    hu = _half_body(2)
    a = ForegroundMasker()(hu, generator=torch.Generator().manual_seed(7))
    b = ForegroundMasker()(hu, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.masked, b.masked) and torch.equal(a.voxel_mask, b.voxel_mask)


@pytest.mark.parametrize("fill", ["noise", "zero"])
@pytest.mark.parametrize("selection", ["bernoulli", "exact", "random"])
def test_masker_equals_the_functions_it_fuses(fill, selection):
    """The masker's single-buffer path gives what the documented functions give, draw for draw."""
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(2, 2, 32, 48, 32, generator=gen) * 1400 - 1000  # two channels, criterion on channel 0
    masker = ForegroundMasker(ratio=0.5, selection=selection, fill=fill)
    out = masker(x, generator=torch.Generator().manual_seed(5))
    ref_gen = torch.Generator().manual_seed(5)
    fg = foreground_subvolumes(x)
    sub = sample_subvolume_mask(fg, 0.5, selection, ref_gen)
    expected = fill_masked(x, expand_subvolume_mask(sub, S), fill, ref_gen)
    assert torch.equal(out.foreground, fg) and torch.equal(out.subvolume_mask, sub)
    assert torch.equal(out.masked, expected)  # -0.0 == 0.0 for the zero fill
    assert torch.equal(out.voxel_mask, expand_subvolume_mask(sub, S))
    assert out.masked_fraction.item() == pytest.approx(out.voxel_mask.float().mean().item())


def test_masker_keeps_the_input_and_builds_no_voxel_mask_unless_asked():
    x = _half_body(2)
    before = x.clone()
    out = ForegroundMasker(ratio=1.0)(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, before) and out.masked.data_ptr() != x.data_ptr()
    assert "voxel_mask" not in vars(out)  # lazily built
    assert out.voxel_mask[..., 32:].all() and "voxel_mask" in vars(out)


def test_half_precision_batch_uses_a_float32_criterion():
    hu = blocks([[[-1000.0, 250.0]]]).half()  # a float16 block sum of 4096 x 250 would overflow
    out = ForegroundMasker(ratio=1.0, fill="zero")(hu)
    assert out.foreground.tolist() == [[[[False, True]]]] and out.masked.dtype == torch.float16
    assert (out.masked[..., 16:] == 0).all() and (out.masked[..., :16] == -1000).all()


def test_window_in_other_units_gives_the_same_subvolumes():
    gen = torch.Generator().manual_seed(8)
    hu = torch.rand(2, 1, 32, 32, 32, generator=gen) * 1400 - 1000
    mean, std = 40.0, 60.0
    normalized = (hu - mean) / std
    window = ((-175.0 - mean) / std, (250.0 - mean) / std)
    assert torch.equal(foreground_subvolumes(hu), foreground_subvolumes(normalized, window=window))


@pytest.mark.parametrize("kwargs", [dict(ratio=1.5), dict(selection="blocks"), dict(fill="mean"), dict(window=(1, 0))])
def test_bad_arguments_raise_value_errors_naming_them(kwargs):
    with pytest.raises(ValueError, match=str(list(kwargs.values())[0]).strip("()").split(",")[0]):
        ForegroundMasker(**kwargs)


# --- the window argument is used (crafted blocks whose verdict differs between windows) -----------
# Window (0, 400) HU, threshold 0.1: a uniform block is foreground from 0 + 0.1 * 400 = 40 HU on.
# Blocks of -100 HU (fat) and 20 HU (fluid) are foreground under the paper's window (-132.5 HU)
# but background under (0, 400); 60 HU is foreground under both; -1000 HU under neither.
SHIFTED_WINDOW = (0.0, 400.0)
CRAFTED = [[[-100.0, 20.0], [60.0, -1000.0]]]
UNDER_PAPER_WINDOW = [[True, True], [True, False]]
UNDER_SHIFTED_WINDOW = [[False, False], [True, False]]


def test_criterion_follows_a_non_default_window():
    hu = blocks(CRAFTED)
    assert foreground_subvolumes(hu)[0, 0].tolist() == UNDER_PAPER_WINDOW
    assert foreground_subvolumes(hu, window=SHIFTED_WINDOW)[0, 0].tolist() == UNDER_SHIFTED_WINDOW


def test_masker_follows_a_non_default_window():
    hu = blocks(CRAFTED)
    paper = ForegroundMasker(ratio=1.0, fill="zero")(hu)
    shifted = ForegroundMasker(window=SHIFTED_WINDOW, ratio=1.0, fill="zero")(hu)
    assert paper.subvolume_mask[0, 0].tolist() == UNDER_PAPER_WINDOW
    assert shifted.subvolume_mask[0, 0].tolist() == UNDER_SHIFTED_WINDOW
    assert (shifted.masked[..., 16:32, :16] == 60.0).sum() == 0  # the 60 HU block is masked (zero-filled)
    assert (shifted.masked[..., :16, :16, :16] == -100.0).all()  # the fat block is kept


def test_masker_in_normalized_units_needs_the_mapped_window():
    """On nnU-Net-normalized data (mean 40, sd 60 HU) the HU window mapped by hand selects the HU verdicts."""
    hu = blocks(CRAFTED)
    normalized = (hu - 40.0) / 60.0
    mapped = ((-175.0 - 40.0) / 60.0, (250.0 - 40.0) / 60.0)  # (-3.583, 3.5)
    out = ForegroundMasker(window=mapped, ratio=1.0, fill="zero")(normalized)
    assert out.foreground[0, 0].tolist() == UNDER_PAPER_WINDOW
    # the raw HU window on normalized values: every block lies within (-175, 250) "HU" near 0 ->
    # windowed about 0.41, so all four blocks (air included) would wrongly count as foreground
    wrong = ForegroundMasker(ratio=1.0, fill="zero")(normalized)
    assert wrong.foreground.all()


def test_masker_from_recipe_takes_every_setting():
    from nnunet_subfore.recipe import PAPER_MASKING

    recipe = PAPER_MASKING.with_changes(window=SHIFTED_WINDOW, threshold=0.2, subvolume_size=8, ratio=0.3,
                                        selection="exact", fill="zero")
    masker = ForegroundMasker.from_recipe(recipe)
    assert (masker.window, masker.threshold, masker.subvolume_size, masker.ratio, masker.selection, masker.fill) == (
        SHIFTED_WINDOW, 0.2, 8, 0.3, "exact", "zero")
    assert ForegroundMasker.from_recipe(recipe, window=(1.0, 2.0), selection="random").window == (1.0, 2.0)


# ---------------------------------------------------------------------------------------------- Otsu criterion
from nnunet_subfore.masking import otsu_thresholds, windowed_block_means  # noqa: E402


def _brute_force_otsu(row):
    """Otsu by trying every split of the sorted values (the definition)."""
    import numpy as np

    v = np.sort(np.asarray(row, dtype=float))
    best, threshold = -1.0, -np.inf
    for k in range(1, len(v)):
        if v[k] == v[k - 1]:
            continue
        low, high = v[:k], v[k:]
        between = len(low) * len(high) / len(v) ** 2 * (low.mean() - high.mean()) ** 2
        if between > best + 1e-15:
            best, threshold = between, (v[k - 1] + v[k]) / 2
    return threshold


def test_otsu_thresholds_match_the_definition_row_by_row():
    gen = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.rand(5, 27, generator=gen), torch.tensor([[0.0] * 20 + [1.0] * 7])])
    got = otsu_thresholds(rows)
    for row, t in zip(rows, got):
        assert float(t) == pytest.approx(_brute_force_otsu(row.tolist()))
    assert float(got[-1]) == pytest.approx(0.5)
    assert otsu_thresholds(torch.full((2, 8), 0.3)).tolist() == [float("-inf")] * 2  # nothing to split


def _blocks_hu(values):
    """A (1, 1, 16 * len(values), 16, 16) HU volume whose 16^3 blocks have the given intensities."""
    return torch.tensor(values, dtype=torch.float32).repeat_interleave(16)[None, None, :, None, None].expand(1, 1, -1, 16, 16).contiguous()


def test_otsu_criterion_splits_body_patches_and_keeps_lambda_where_air_decides():
    fat, soft, air = -100.0, 40.0, -1000.0
    body = _blocks_hu([fat, fat, soft, soft])
    assert foreground_subvolumes(body).flatten().tolist() == [True] * 4  # fixed: fat is foreground
    assert foreground_subvolumes(body, criterion="otsu").flatten().tolist() == [False, False, True, True]
    with_air = _blocks_hu([air, air, soft, soft])  # Otsu splits air from body, above lambda: the same blocks
    assert torch.equal(foreground_subvolumes(with_air, criterion="otsu"), foreground_subvolumes(with_air))
    # the split of largest contrast: with air, fat and soft tissue it lies between fat and soft tissue
    mixed = _blocks_hu([air, air, air, fat, fat, soft])
    expected = max(_brute_force_otsu(windowed_block_means(mixed).flatten().tolist()), 0.1)
    assert expected > 75 / 425
    assert foreground_subvolumes(mixed, criterion="otsu").flatten().tolist() == [False] * 5 + [True]
    # never below lambda: air with faint noise splits below 0.1, and lambda keeps it background
    faint = _blocks_hu([-175.0, -175.0, -170.0, -160.0])
    assert not foreground_subvolumes(faint, criterion="otsu").any()
    uniform = _blocks_hu([fat] * 4)
    assert torch.equal(foreground_subvolumes(uniform, criterion="otsu"), foreground_subvolumes(uniform))
    # per batch element: each patch its own threshold
    batch = torch.cat([body, with_air])
    assert torch.equal(foreground_subvolumes(batch, criterion="otsu"),
                       torch.cat([foreground_subvolumes(body, criterion="otsu"), foreground_subvolumes(with_air)]))
    means = windowed_block_means(body).flatten()
    assert means.tolist() == pytest.approx([75 / 425, 75 / 425, 215 / 425, 215 / 425])


def test_the_masker_masks_only_otsu_foreground():
    body = _blocks_hu([-100.0, -100.0, 40.0, 40.0])
    out = ForegroundMasker(ratio=1.0, fill="zero", criterion="otsu")(body)
    assert out.foreground.flatten().tolist() == [False, False, True, True]
    assert torch.equal(out.subvolume_mask, out.foreground)
    assert torch.equal(ForegroundMasker(criterion="otsu").foreground(body), out.foreground)
    assert "criterion='otsu'" in repr(ForegroundMasker(criterion="otsu")) and "criterion" not in repr(ForegroundMasker())
    with pytest.raises(ValueError, match="criterion"):
        ForegroundMasker(criterion="adaptive")
    from nnunet_subfore.recipe import PAPER_MASKING

    assert ForegroundMasker.from_recipe(PAPER_MASKING.with_changes(criterion="otsu")).criterion == "otsu"


# ---------------------------------------------------------------------------------------------- nonzero criterion
from nnunet_subfore.masking import nonzero_subvolumes  # noqa: E402


def test_nonzero_criterion_counts_the_share_inside_the_nonzero_region_of_any_channel():
    x = torch.zeros(1, 2, 16, 16, 64)  # four blocks along x
    x[:, 0, :, :, 0:16] = 1.5  # block 0: all inside (channel 0)
    x[:, 1, :8, :, 16:32] = -0.7  # block 1: half inside, through channel 1 only (z-scores may be negative)
    x[:, 0, :1, :, 32:48] = 0.3  # block 2: 1/16 inside
    assert nonzero_subvolumes(x, 16, 0.1).flatten().tolist() == [True, True, False, False]
    assert nonzero_subvolumes(x, 16, 0.05).flatten().tolist() == [True, True, True, False]
    assert torch.equal(foreground_subvolumes(x, criterion="nonzero"), nonzero_subvolumes(x))
    out = ForegroundMasker(ratio=1.0, fill="zero", criterion="nonzero")(x)
    assert out.subvolume_mask.flatten().tolist() == [True, True, False, False]
    assert out.masked[..., :32].abs().sum() == 0 and torch.equal(out.masked[..., 32:], x[..., 32:])
