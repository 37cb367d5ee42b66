"""The masking report on a crafted preprocessed set: its numbers are the library's masks, patch for patch."""

import json
import pickle

import numpy as np
import pytest
import torch

from nnunet_subfore.cli import main
from nnunet_subfore.errors import UserError
from nnunet_subfore.masking_setup import masker_for_plans
from nnunet_subfore.recipe import PAPER_MASKING
from nnunet_subfore.reporting.masking_report import masking_report, summary_numbers, write_masking_report

MEAN, STD, LOWER, UPPER = -140.0, 260.0, -980.0, 1200.0
PATCH = (32, 32, 32)


def plans(lower=LOWER) -> dict:
    return {
        "plans_name": "nnUNetPlans", "dataset_name": "Dataset805_Crafted",
        "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": list(PATCH),
                                          "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
                                          "spacing": [1.0, 1.0, 1.0], "batch_size": 2,
                                          "preprocessor_name": "DefaultPreprocessor",
                                          "resampling_fn_data": "resample_data_or_seg_to_shape",
                                          "resampling_fn_seg": "resample_data_or_seg_to_shape",
                                          "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                                          "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
                                          "resampling_fn_probabilities_kwargs": {},
                                          "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                           "_kw_requires_import": []}}},
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": MEAN, "std": STD, "percentile_00_5": lower, "percentile_99_5": UPPER}},
        "original_median_spacing_after_transp": [1, 1, 1], "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO",
        "label_manager": "LabelManager", "experiment_planner_used": "x",
    }


def normalized(hu: np.ndarray) -> np.ndarray:
    return ((np.clip(hu, LOWER, UPPER) - MEAN) / STD).astype(np.float32)[None]


def crafted_cases():
    rng = np.random.default_rng(0)
    half = np.full(PATCH, -1000.0)
    half[16:] = 40.0
    checker = rng.choice([-1000.0, -120.0, -60.0, 40.0], size=(2, 2, 2)).repeat(16, 0).repeat(16, 1).repeat(16, 2)
    small = np.full((16, 32, 32), 40.0)  # the loader pads it with 0 (the foreground mean, -140 HU), 8 slices each side
    return {"air": np.full(PATCH, -1000.0), "body": np.full(PATCH, 40.0), "half": half,
            "checker": checker + rng.normal(0, 5, PATCH), "small": small}


@pytest.fixture
def preprocessed(tmp_path):
    folder = tmp_path / "Dataset805_Crafted"
    data = folder / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    for case, hu in crafted_cases().items():
        np.savez_compressed(data / f"{case}.npz", data=normalized(hu), seg=np.zeros((1,) + hu.shape, np.int8))
        with open(data / f"{case}.pkl", "wb") as f:
            pickle.dump({"class_locations": {1: np.zeros((0, 4), np.int64)}}, f)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "body": 1},
                                                     "numTraining": 5, "file_ending": ".nii.gz"}))
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans()))
    return folder


def library_share(hu: np.ndarray) -> float:
    """The trainer's masker on the patch the loader cuts (volumes of the patch size; `small` padded with 0)."""
    x = normalized(hu)
    if x.shape[1] < PATCH[0]:
        pad = (PATCH[0] - x.shape[1]) // 2
        x = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)), constant_values=0.0)
    masker, _ = masker_for_plans(plans(), "3d_fullres", PAPER_MASKING)
    return float(masker(torch.from_numpy(x)[None], generator=torch.Generator().manual_seed(0)).foreground.float().mean())


def test_the_report_agrees_with_the_library_masks(preprocessed, tmp_path):
    report = masking_report(preprocessed, plans(), "3d_fullres", PATCH, PAPER_MASKING, patches_per_case=3)
    expected = {case: library_share(hu) for case, hu in crafted_cases().items()}
    assert expected["air"] == 0 and expected["body"] == 1 and expected["half"] == 0.5
    for case, shares in report.patch_shares.items():
        assert shares == pytest.approx([expected[case]] * 3), case
    assert report.cases_without_foreground == ["air"] and sorted(report.cases_all_foreground) == ["body", "small"]
    n = summary_numbers(report)
    assert n["foreground_share"] == pytest.approx(np.mean(list(expected.values())))
    assert n["expected_masked_share"] == pytest.approx(0.6 * n["foreground_share"])
    files = write_masking_report(report, tmp_path / "out")
    rows = {line.split(",")[0]: line.split(",") for line in (tmp_path / "out" / "masking_report.csv").read_text().splitlines()[1:]}
    for case, share in expected.items():
        assert float(rows[case][2]) == pytest.approx(share) and float(rows[case][5]) == pytest.approx(0.6 * share)
    record = json.loads((tmp_path / "out" / "masking_report.json").read_text())
    assert record["cases_without_foreground"] == ["air"]
    # the other criterion on the same patches, as the library computes it
    otsu, _ = masker_for_plans(plans(), "3d_fullres", PAPER_MASKING.with_changes(criterion="otsu"))
    for case, hu in crafted_cases().items():
        if case != "small":
            want = float(otsu.foreground(torch.from_numpy(normalized(hu))[None]).float().mean())
            assert report.other_criteria["otsu"][case] == pytest.approx([want] * 3), case
    assert report.other_criteria["otsu"]["checker"][0] < expected["checker"]  # Otsu drops the fat blocks
    assert 0.1 < record["dataset_otsu_lambda"] < 1 and record["window"] == [-175.0, 250.0]
    assert len(files) == 4 and (tmp_path / "out" / "masking_report.png").stat().st_size > 10_000
    from subfore_test_helpers import ink_on_border

    assert not ink_on_border(tmp_path / "out" / "masking_report.png")
    with pytest.raises(UserError, match="--force"):
        write_masking_report(report, tmp_path / "out")


def test_a_dataset_threshold_from_the_report_feeds_the_plans(preprocessed, tmp_path):
    from nnunet_subfore.plans import masking_settings

    report = masking_report(preprocessed, plans(), "3d_fullres", PATCH, PAPER_MASKING, patches_per_case=1)
    write_masking_report(report, tmp_path / "out")
    settings = masking_settings(threshold_from=tmp_path / "out" / "masking_report.json")
    assert settings["threshold"] == pytest.approx(report.dataset_otsu_lambda)


def test_exact_selection_expects_the_rounded_count(preprocessed):
    report = masking_report(preprocessed, plans(), "3d_fullres", PATCH, PAPER_MASKING.with_changes(selection="exact"),
                            patches_per_case=1)
    assert report.expected_masked(np.array([0.5, 1 / 8])).tolist() == pytest.approx([0.25, 0.125])  # round(0.6 x 4)=2, round(0.6)=1


def test_plans_that_hide_the_threshold_are_refused_as_by_the_trainer(preprocessed):
    with pytest.raises(UserError, match="percentile_00_5"):
        masking_report(preprocessed, plans(lower=35.0), "3d_fullres", PATCH, PAPER_MASKING)


def test_the_command_uses_the_trainer_s_patch_and_recipe(preprocessed, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["masking-report", "-d", "805", "--preprocessed-root", str(preprocessed.parent), "-tr",
            "SubForePretrainTrainer_demo", "--patches-per-case", "2", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "32x32x32" in printed and "bernoulli" in printed
    assert main(args) == 2
    assert main(args[:-2] + ["-o", str(tmp_path / "x"), "-tr", "SubForeSwinUNETRTrainer"]) == 2
