"""The paper's threshold analysis on labelled phantoms: lambda lies between air and soft tissue."""

import json

import numpy as np
import pytest

from nnunet_subfore.cli import main
from nnunet_subfore.data.phantoms import HU, write_labelled_dataset
from nnunet_subfore.errors import UserError
from nnunet_subfore.recipe import PAPER_MASKING
from nnunet_subfore.reporting.threshold_analysis import best_threshold, block_errors, threshold_analysis


def u(hu: float) -> float:
    lo, hi = PAPER_MASKING.window
    return min(max((hu - lo) / (hi - lo), 0.0), 1.0)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    return write_labelled_dataset(raw, 803, "Lab", 3, seed=5, shape=(48, 64, 64))


def test_lambda_separates_blocks_and_prefers_the_middle_of_a_gap():
    labelled, background = np.array([0.5, 0.6, 0.7]), np.array([0.0, 0.0, 0.1, 0.2])
    missed, false = block_errors(labelled, background, np.array([0.1, 0.3, 0.55]))
    np.testing.assert_allclose(missed, [0, 0, 1 / 3])
    np.testing.assert_allclose(false, [0.5, 0, 0])
    assert best_threshold(labelled, background) == pytest.approx(0.35, abs=0.01)  # middle of (0.2, 0.5]


def test_on_labelled_phantoms_lambda_lies_between_air_and_soft_tissue(labelled):
    analysis = threshold_analysis(labelled, subvolume_size=8)  # the phantoms' organs fill few 16^3 blocks
    n = analysis.numbers
    assert u(HU["air"]) < n["lambda"] < u(HU["muscle"])
    assert u(HU["fat"]) < n["organ_onset_voxels"] <= n["organ_onset_blocks"] + 0.05
    assert n["labelled_blocks_below_lambda"] == 0.0
    # the paper's 0.1 keeps every organ block and takes much body tissue with it
    assert n["labelled_blocks_below_paper_lambda"] == 0.0
    assert n["background_blocks_at_or_above_paper_lambda"] > n["background_blocks_at_or_above_lambda"]
    assert analysis.voxel_counts["liver"].sum() > 0 and set(analysis.block_counts) >= {"background", "labelled", "mixed"}


def test_the_command_writes_png_md_csv_json_and_refuses_to_overwrite(labelled, tmp_path, capsys):
    out = tmp_path / "analysis"
    args = ["threshold-analysis", "-d", "803", "--raw-root", str(labelled.parent), "-o", str(out),
            "--subvolume-size", "8", "--max-cases", "2"]
    assert main(args) == 0
    assert "paper" in capsys.readouterr().out
    record = json.loads((out / "threshold_analysis.json").read_text())
    assert len(record["cases"]) == 2 and 0 < record["lambda"] < 1
    assert (out / "threshold_analysis.png").stat().st_size > 10_000
    from subfore_test_helpers import ink_on_border

    assert not ink_on_border(out / "threshold_analysis.png")
    csv = (out / "threshold_analysis.csv").read_text().splitlines()
    assert csv[0].startswith("u_low,u_high,voxels_background") and len(csv) == 101
    assert "| lambda" in (out / "threshold_analysis.md").read_text()
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_non_ct_datasets_are_refused(labelled, tmp_path):
    import shutil

    other = tmp_path / "Dataset804_Mri"
    shutil.copytree(labelled, other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1"}
    (other / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not CT"):
        threshold_analysis(other)
