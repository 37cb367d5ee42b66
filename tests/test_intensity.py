import numpy as np
import pytest

from nnunet_subfore.errors import UserError
from nnunet_subfore.intensity import CTIntensityMapping, IntensityTrapError, NotCTError


def plans(lower=-1000.0, upper=1500.0, mean=-200.0, std=400.0, scheme="CTNormalization"):
    return {
        "configurations": {"3d_fullres": {"normalization_schemes": [scheme], "patch_size": [64, 64, 64]}},
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": mean, "std": std, "percentile_00_5": lower, "percentile_99_5": upper}
        },
    }


def test_round_trip_and_clipping_like_nnunet():
    m = CTIntensityMapping.from_plans(plans())
    hu = np.array([-1200.0, -1000.0, 0.0, 1500.0, 2000.0])
    norm = m.to_normalized(hu)
    np.testing.assert_allclose(m.to_hu(norm), [-1000.0, -1000.0, 0.0, 1500.0, 1500.0])
    assert m.to_normalized(-200.0) == 0.0


def test_window_maps_affinely():
    m = CTIntensityMapping.from_plans(plans())
    lo, hi = m.window_to_normalized((-175.0, 250.0))
    assert lo == pytest.approx(25 / 400) and hi == pytest.approx(450 / 400)


def test_trap_stops_with_the_fix_in_the_message():
    m = CTIntensityMapping.from_plans(plans(lower=35.0, mean=100.0, std=50.0))
    with pytest.raises(IntensityTrapError) as e:
        m.check_threshold()
    msg = str(e.value)
    assert "35.0 HU" in msg and "-132.5 HU" in msg and "register-unlabeled" in msg and "--hu-window" in msg
    assert isinstance(e.value, UserError)


def test_lower_clip_below_threshold_passes():
    assert CTIntensityMapping.from_plans(plans(lower=-1000.0)).check_threshold() == pytest.approx(-132.5)
    # exactly at the threshold is refused: a uniform block of the clip value would be foreground
    with pytest.raises(IntensityTrapError):
        CTIntensityMapping.from_plans(plans(lower=-132.5)).check_threshold()


def test_non_ct_channel_is_refused():
    with pytest.raises(NotCTError, match="ZScoreNormalization"):
        CTIntensityMapping.from_plans(plans(scheme="ZScoreNormalization"))


def test_inherited_configuration_is_resolved():
    p = plans()
    p["configurations"]["3d_big"] = {"inherits_from": "3d_fullres", "patch_size": [128, 128, 128]}
    assert CTIntensityMapping.from_plans(p, "3d_big").lower_clip == -1000.0
    with pytest.raises(KeyError, match="3d_lowres"):
        CTIntensityMapping.from_plans(p, "3d_lowres")
