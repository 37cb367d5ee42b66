"""masker_for_plans: the HU criteria on CT plans, the nonzero criterion on MRI plans, a refusal otherwise."""

import pytest

from nnunet_subfore.intensity import IntensityTrapError
from nnunet_subfore.masking_setup import NoCriterionError, masker_for_plans
from nnunet_subfore.recipe import PAPER_MASKING
from nnunet_subfore.errors import UserError


def plans(schemes, use_mask, lower=-980.0):
    return {
        "configurations": {"3d_fullres": {"normalization_schemes": schemes, "use_mask_for_norm": use_mask}},
        "foreground_intensity_properties_per_channel": {
            str(c): {"mean": -140.0, "std": 260.0, "percentile_00_5": lower, "percentile_99_5": 1200.0}
            for c in range(len(schemes))},
    }


def test_ct_plans_get_the_hu_criterion_with_the_mapped_window():
    masker, line = masker_for_plans(plans(["CTNormalization"], [False]), "3d_fullres", PAPER_MASKING)
    assert masker.criterion == "fixed" and masker.window == pytest.approx((-35 / 260, 390 / 260))
    assert "HU foreground criterion (fixed)" in line and "-132.5 HU" in line
    otsu, line = masker_for_plans(plans(["CTNormalization"], [False]), "3d_fullres",
                                  PAPER_MASKING.with_changes(criterion="otsu"))
    assert otsu.criterion == "otsu" and "Otsu" in line
    with pytest.raises(IntensityTrapError):
        masker_for_plans(plans(["CTNormalization"], [False], lower=35.0), "3d_fullres", PAPER_MASKING)


def test_mri_plans_with_use_mask_for_norm_get_the_nonzero_criterion():
    brats = plans(["ZScoreNormalization"] * 4, [True] * 4)
    masker, line = masker_for_plans(brats, "3d_fullres", PAPER_MASKING)
    assert masker.criterion == "nonzero" and masker.threshold == PAPER_MASKING.threshold
    assert "switched to nonzero" in line and "use_mask_for_norm" in line
    assert "switched" not in masker_for_plans(brats, "3d_fullres", PAPER_MASKING.with_changes(criterion="nonzero"))[1]


@pytest.mark.parametrize("schemes,use_mask", [
    (["ZScoreNormalization"], [False]),  # z-scored over the whole image: the outside is not 0
    (["ZScoreNormalization", "CTNormalization"], [True, False]),  # channel 0 not CT, channel 1 shifts the outside
    (["RescaleTo01Normalization"], [True]),
])
def test_neither_criterion_applies_is_a_clear_refusal(schemes, use_mask):
    with pytest.raises(NoCriterionError, match="neither") as e:
        masker_for_plans(plans(schemes, use_mask), "3d_fullres", PAPER_MASKING, source="plans 'X'")
    assert isinstance(e.value, UserError) and "use_mask_for_norm" in str(e.value) and "random masking" in str(e.value)


def test_the_nonzero_criterion_is_refused_on_ct():
    with pytest.raises(NoCriterionError, match="non-CT"):
        masker_for_plans(plans(["CTNormalization"], [False]), "3d_fullres", PAPER_MASKING.with_changes(criterion="nonzero"))
