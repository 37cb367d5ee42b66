"""label-efficiency without training: nested subsets, the held-out set, the resume logic (a fake runner in place
of nnUNetv2_train), the derived preprocessed folder, and every bad input stopping before the first run.

The end-to-end run through nnU-Net's commands is in test_label_efficiency_pipeline.py (slow).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from subfore_test_helpers import tree_digest

from nnunet_subfore.cli import main
from nnunet_subfore.errors import UserError
from nnunet_subfore.label_efficiency import QUICK_TRAINER, experiment_environment, label_efficiency, worker_counts
from nnunet_subfore.label_efficiency_design import (
    SCRATCH_ARM,
    Arm,
    Experiment,
    choose_heldout,
    extend_experiment,
    make_folds,
    nested_order,
    parse_arms,
    splits,
)
from nnunet_subfore.label_efficiency_runs import NEW, RESUME, Run, RunLayout, run_state, train_command

CASES = [f"case_{i:03d}" for i in range(10)]
DATASET = "Dataset602_Organs"
PLANS = "TinyPlans"
_COMMON = dict(conv_op="torch.nn.modules.conv.Conv3d", conv_bias=True,
               norm_op="torch.nn.modules.instancenorm.InstanceNorm3d", norm_op_kwargs={"eps": 1e-05, "affine": True},
               dropout_op=None, dropout_op_kwargs=None, nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True})


def tiny_arch(features=(4, 8)) -> dict:
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": dict(n_stages=2, features_per_stage=list(features), kernel_sizes=[[3, 3, 3]] * 2,
                                strides=[[1, 1, 1], [2, 2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1],
                                **_COMMON),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def tiny_plans(features=(4, 8)) -> dict:
    return {"dataset_name": DATASET, "plans_name": PLANS,
            "foreground_intensity_properties_per_channel": {
                "0": {"mean": -300.0, "std": 400.0, "percentile_00_5": -990.0, "percentile_99_5": 300.0}},
            "configurations": {"3d_fullres": {
                "data_identifier": f"{PLANS}_3d_fullres", "patch_size": [16, 16, 16], "batch_size": 2,
                "normalization_schemes": ["CTNormalization"], "spacing": [1.0, 1.0, 1.0],
                "architecture": tiny_arch(features)}}}


@pytest.fixture
def preprocessed(tmp_path):
    """A preprocessed dataset as nnU-Net lays it out (file names only: nothing here is trained)."""
    folder = tmp_path / "nnUNet_preprocessed" / DATASET
    data, gt = folder / f"{PLANS}_3d_fullres", folder / "gt_segmentations"
    for sub in (data, gt):
        sub.mkdir(parents=True)
    (folder / f"{PLANS}.json").write_text(json.dumps(tiny_plans()))
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": len(CASES),
                    "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "dataset_fingerprint.json").write_text("{}")
    for case in CASES:
        for name in (f"{case}.b2nd", f"{case}_seg.b2nd", f"{case}.pkl"):
            (data / name).write_bytes(b"x")
        (gt / f"{case}.nii.gz").write_bytes(b"x")
    return tmp_path / "nnUNet_preprocessed"


def checkpoint(path: Path, features=(4, 8), out_channels=1) -> Path:
    from nnunet_subfore.networks import build_plans_network
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(tiny_plans(features)).get_configuration("3d_fullres")
    network = build_plans_network(config, 1, out_channels, False)
    torch.save({"network_weights": network.state_dict()}, path)
    return path


class FakeTrainer:
    """Stands in for nnUNetv2_train: records each command and writes the summary.json nnU-Net's validation would."""

    def __init__(self, dice=0.5, fail_at=None):
        self.commands, self.dice, self.fail_at = [], dice, fail_at

    def __call__(self, command, env, log):
        self.commands.append(list(command))
        if self.fail_at is not None and len(self.commands) == self.fail_at:
            raise KeyboardInterrupt  # the kill
        dataset, configuration, fold = command[1:4]
        trainer, plans = command[command.index("-tr") + 1], command[command.index("-p") + 1]
        folder = Path(env["nnUNet_results"]) / dataset / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
        (folder / "validation").mkdir(parents=True)
        dice = self.dice + 0.01 * int(fold)
        summary = {"foreground_mean": {"Dice": dice}, "mean": {"1": {"Dice": dice}}, "metric_per_case": []}
        (folder / "validation" / "summary.json").write_text(json.dumps(summary))


def run_quick(preprocessed, output, fake, **kwargs):
    stream = io.StringIO()
    settings = dict(plans=PLANS, quick=True, device="cpu", preprocessed_root=preprocessed, stream=stream, execute=fake)
    settings.update(kwargs)
    result = label_efficiency(DATASET, output, **settings)
    return result, stream.getvalue()


# ---------------------------------------------------------------------------------------------- the design

def test_subsets_are_nested_disjoint_from_the_heldout_set_and_fixed_per_seed():
    heldout = choose_heldout(CASES, 2)
    pool = [c for c in CASES if c not in heldout]
    folds = make_folds(pool, [1, 2, 4, 8], [0, 1, 2])
    for seed in (0, 1, 2):
        subsets = [set(f.train) for f in folds if f.seed == seed]
        assert [len(s) for s in subsets] == [1, 2, 4, 8]
        assert all(a < b for a, b in zip(subsets, subsets[1:]))  # strictly nested
        assert not set().union(*subsets) & set(heldout)
    assert make_folds(pool, [1, 2, 4, 8], [0, 1, 2]) == folds  # deterministic
    assert nested_order(pool, 0) != nested_order(pool, 1)  # each seed its own sequence
    # adding a seed or a label count leaves the existing subsets as they were
    again = {(f.labels, f.seed): f.train for f in make_folds(pool, [1, 2, 4, 8], [2, 0, 1, 7])}
    assert all(again[(f.labels, f.seed)] == f.train for f in folds)
    assert [s["val"] for s in splits(folds, heldout)] == [heldout] * len(folds)


def test_the_heldout_draw_does_not_depend_on_the_training_seeds():
    assert choose_heldout(CASES, 3) == choose_heldout(list(reversed(CASES)), 3)
    assert len(choose_heldout(CASES)) == 2  # a fifth of 10
    assert choose_heldout(CASES, names=["case_004", "case_001"]) == ["case_001", "case_004"]


def test_a_rerun_extends_the_experiment_and_keeps_fold_numbers():
    pool, heldout = CASES[2:], tuple(CASES[:2])
    scratch = Arm(SCRATCH_ARM, "T")
    first, folds = extend_experiment(None, Experiment(DATASET, PLANS, "3d_fullres", heldout, [], {"scratch": scratch}),
                                     pool, [1, 2], [0], "OUT")
    assert [(f.index, f.labels, f.seed) for f in folds] == [(0, 1, 0), (1, 2, 0)]
    more, folds = extend_experiment(first, Experiment(DATASET, PLANS, "3d_fullres", heldout, [], {"scratch": scratch}),
                                    pool, [1, 2, 4], [0, 1], "OUT")
    assert [(f.index, f.labels, f.seed) for f in more.folds[:2]] == [(0, 1, 0), (1, 2, 0)]
    assert sorted(f.index for f in folds) == list(range(6))
    other = Experiment(DATASET, PLANS, "3d_fullres", tuple(CASES[:3]), [], {"scratch": scratch})
    with pytest.raises(UserError, match="holds an experiment with heldout"):
        extend_experiment(more, other, CASES[3:], [1], [0], "OUT")
    renamed = Experiment(DATASET, PLANS, "3d_fullres", heldout, [], {"scratch": Arm(SCRATCH_ARM, "Other")})
    with pytest.raises(UserError, match="ran arm 'scratch'"):
        extend_experiment(more, renamed, pool, [1], [0], "OUT")


def test_arm_specs():
    arms = parse_arms(["fg=a.pth", "rnd=/x/b.pth"], "T", ["rnd=U"])
    assert [(a.name, a.trainer, a.checkpoint.name) for a in arms] == [("fg", "T", "a.pth"), ("rnd", "U", "b.pth")]
    for specs, message in ((["fg"], "NAME=CHECKPOINT"), (["scratch=a.pth"], "taken by the from-scratch arm"),
                           (["a=x", "a=y"], "given twice"), (["a b=x"], "letters, digits")):
        with pytest.raises(UserError, match=message):
            parse_arms(specs, "T")
    with pytest.raises(UserError, match="no --arm defines"):
        parse_arms(["a=x"], "T", ["b=U"])


# ---------------------------------------------------------------------------------------------- runs and resume

def test_commands_resume_with_c_and_never_pass_weights_then(tmp_path):
    fold = make_folds(CASES, [1], [0])[0]
    layout = RunLayout(tmp_path, DATASET, PLANS, "3d_fullres")
    run = Run(Arm("fg", "T", tmp_path / "w.pth"), fold)
    assert train_command(run, layout, "cpu", False)[-2:] == ["-pretrained_weights", str(tmp_path / "w.pth")]
    resumed = train_command(run, layout, "cpu", True)
    assert resumed[-1] == "--c" and "-pretrained_weights" not in resumed
    folder = layout.fold_folder(run)
    assert folder.parts[-4:] == ("fg", DATASET, f"T__{PLANS}__3d_fullres", "fold_0")
    folder.mkdir(parents=True)
    assert run_state(folder, layout.summary_file(run)) == (NEW, [])
    torch.save({"x": 1}, folder / "checkpoint_best.pth")
    (folder / "checkpoint_latest.pth").write_bytes(b"PK\x03\x04 cut off by a kill")
    assert run_state(folder, layout.summary_file(run)) == (RESUME, ["checkpoint_latest.pth"])
    assert not (folder / "checkpoint_latest.pth").exists() and (folder / "checkpoint_best.pth").exists()


def test_finished_runs_are_skipped_and_a_killed_one_resumes(preprocessed, tmp_path):
    arm = checkpoint(tmp_path / "pretrained.pth", out_channels=1)
    output = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):
        run_quick(preprocessed, output, FakeTrainer(fail_at=3), arms=[f"pre={arm}"])
    # runs: fold 0 scratch, fold 0 pre, fold 1 scratch (killed), fold 1 pre
    fake = FakeTrainer()
    result, out = run_quick(preprocessed, output, fake, arms=[f"pre={arm}"])
    assert out.count("finished earlier") == 2 and len(fake.commands) == 2
    assert [c[3] for c in fake.commands] == ["1", "1"]  # only fold 1 (2 labelled cases) trains again
    assert "-pretrained_weights" in fake.commands[1] and "-pretrained_weights" not in fake.commands[0]
    assert "[4/4] pre, 2 labelled cases, seed 0 (fold 1): training ... done in" in out and "all runs done" in out
    assert len(result.results) == 4 and all(p.is_file() for p in result.files)
    again = FakeTrainer()
    _, out = run_quick(preprocessed, output, again, arms=[f"pre={arm}"])
    assert again.commands == [] and out.count("(skipped)") == 4


def test_the_derived_folder_links_the_user_data_and_leaves_it_untouched(preprocessed, tmp_path):
    before = tree_digest(preprocessed)
    result, _ = run_quick(preprocessed, tmp_path / "exp", FakeTrainer())
    assert tree_digest(preprocessed) == before and not (preprocessed / DATASET / "splits_final.json").exists()
    derived = tmp_path / "exp" / "preprocessed" / DATASET
    assert (derived / f"{PLANS}.json").is_symlink() and (derived / f"{PLANS}_3d_fullres").is_dir()
    assert (derived / f"{PLANS}_3d_fullres" / "case_000.b2nd").resolve() == \
        (preprocessed / DATASET / f"{PLANS}_3d_fullres" / "case_000.b2nd").resolve()
    folds = json.loads((derived / "splits_final.json").read_text())
    assert [len(f["train"]) for f in folds] == [1, 2] and folds[0]["val"] == list(result.experiment.heldout)
    assert result.experiment.arms[SCRATCH_ARM].trainer == f"{QUICK_TRAINER}_scratch"


def test_worker_counts_follow_the_cores_and_the_user_wins(tmp_path):
    assert worker_counts(2, "cpu") == {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "2",
                                       "OMP_WAIT_POLICY": "PASSIVE"}
    assert worker_counts(16, "cuda") == {"nnUNet_def_n_proc": "8", "nnUNet_n_proc_DA": "12"}
    layout = RunLayout(tmp_path, DATASET, PLANS, "3d_fullres")
    env = experiment_environment(layout, Arm("fg", "T"), "cuda", base={"nnUNet_n_proc_DA": "3", "nnUNet_raw": "/r",
                                                                       "nnUNet_results": "/user"}, cores=16)
    assert (env["nnUNet_n_proc_DA"], env["nnUNet_def_n_proc"], env["nnUNet_raw"]) == ("3", "8", "/r")
    assert env["nnUNet_results"] == str(tmp_path / "results" / "fg")
    assert env["nnUNet_preprocessed"] == str(tmp_path / "preprocessed")


# ---------------------------------------------------------------------------------------------- bad input

def refused(preprocessed, tmp_path, match, **kwargs):
    fake = FakeTrainer()
    with pytest.raises(UserError, match=match):
        run_quick(preprocessed, tmp_path / "exp", fake, **kwargs)
    assert fake.commands == []  # stopped before any training
    return fake


def test_no_case_left_to_train_or_hold_out(preprocessed, tmp_path):
    refused(preprocessed, tmp_path, "leaves no case to train on", heldout=10)
    refused(preprocessed, tmp_path, "--heldout must be at least 1", heldout=0)
    refused(preprocessed, tmp_path, r"--labels 9 needs 9 training cases, but only 8 are left", heldout=2,
            label_counts=[1, 9])
    refused(preprocessed, tmp_path, "does not have: \\['nope'\\]", heldout_cases=["nope"])


def test_a_checkpoint_of_another_network_is_refused_before_training(preprocessed, tmp_path):
    wider = checkpoint(tmp_path / "wider.pth", features=(8, 16))
    refused(preprocessed, tmp_path, r"(?s)--arm wide: Pretrained weights .*wider.pth do not fit .*SHAPE MISMATCH",
            arms=[f"wide={wider}"])
    swin = tmp_path / "swin.pth"
    torch.save({"network_weights": {"backbone.swinViT.patch_embed.proj.weight": torch.zeros(1)}}, swin)
    refused(preprocessed, tmp_path, "The checkpoint is a swinunetr network", arms=[f"swin={swin}"])
    refused(preprocessed, tmp_path, "--arm gone: Checkpoint .* does not exist", arms=[f"gone={tmp_path / 'x.pth'}"])


def test_plans_that_do_not_match_name_the_file_and_the_command(preprocessed, tmp_path):
    refused(preprocessed, tmp_path, r"OtherPlans.json does not exist.*nnUNetv2_move_plans_between_datasets .*-tp "
            r"OtherPlans.*nnUNetv2_preprocess -d 602 -plans_name OtherPlans", plans="OtherPlans")
    refused(preprocessed, tmp_path, r"has no configuration '2d'", configuration="2d")
    plans = copy.deepcopy(tiny_plans())
    plans["configurations"]["3d_fullres"]["data_identifier"] = "NotPreprocessed_3d_fullres"
    (preprocessed / DATASET / f"{PLANS}.json").write_text(json.dumps(plans))
    refused(preprocessed, tmp_path,
            r"NotPreprocessed_3d_fullres does not exist or is empty.*nnUNetv2_preprocess -d 602")


def test_a_folder_label_efficiency_did_not_make_is_refused(preprocessed, tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("mine")
    refused(preprocessed, tmp_path, "not made by label-efficiency")
    assert main(["label-efficiency", "-d", DATASET, "-p", PLANS, "--quick", "-o", str(tmp_path / "exp"),
                 "--preprocessed-root", str(preprocessed), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "not made by label-efficiency" in err and "Traceback" not in err
    assert (tmp_path / "exp" / "notes.txt").read_text() == "mine"
