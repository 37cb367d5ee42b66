"""End to end for nnU-Net's own CNNs: `nnunet-subfore demo --backbone cnn` (pretraining, the reconstruction picture,
the label-efficiency runs through nnUNetv2_train -pretrained_weights and nnU-Net's validation of the held-out cases),
the stock nnUNetTrainer taking the checkpoint tensor by tensor, prediction geometry, the loss falling for default and
ResEnc-M plans, the trap.

Slow: they share one ``nnunet-subfore demo --quick --backbone cnn`` run (fixture ``cnn_demo_run``, conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from subfore_test_helpers import (
    demo_heldout_images,
    demo_label_efficiency_folds,
    heldout_input_folder,
    masked_l1_trained_and_fresh,
    result_folder,
    run,
)

from nnunet_subfore.demo import CHAINS, DOWNSTREAM_ID, DOWNSTREAM_NAME, PRETRAIN_ID, PRETRAIN_NAME
from nnunet_subfore.paths import dataset_folder_name

pytestmark = pytest.mark.slow

CHAIN = CHAINS["cnn"].for_quick()
PRETRAIN = dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
DOWNSTREAM = dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)
STOCK_SHORT = "nnUNetTrainer_subfore_short"  # tests/ext_trainers: the stock trainer, a short run
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")


def use_env(monkeypatch, env):
    for key in NNUNET_FOLDERS:
        monkeypatch.setenv(key, env[key])


def assert_predictions_with_input_geometry(pred_dir: Path, env):
    """A prediction of every held-out case, on its image's grid, with organ labels only."""
    images = demo_heldout_images(env)
    assert images
    for image in images:
        prediction = pred_dir / image.name.replace("_0000.nii.gz", ".nii.gz")
        assert prediction.is_file(), f"no prediction for {image.name}"
        pred, img = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(image))
        assert pred.GetSize() == img.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), img.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(pred.GetOrigin(), img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(pred.GetDirection(), img.GetDirection(), atol=1e-6)
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2, 3}


def test_cnn_demo_runs_the_chain_on_the_planned_network(cnn_demo_run, cnn_checkpoint):
    workdir, env, done = cnn_demo_run
    out = done.stdout
    for command in ("nnUNetv2_plan_and_preprocess", "nnUNetv2_move_plans_between_datasets", "nnUNetv2_train"):
        assert f"$ {command}" in out, command
    assert "## Label efficiency" in out and "\nReading: pretrained vs scratch, held-out Dice points: " in out
    assert "masked L1" in out and (workdir / "reconstruction.png").stat().st_size > 10_000
    assert (workdir / "label_efficiency" / "label_efficiency.png").is_file()
    run_dir = result_folder(env, PRETRAIN, CHAIN.pretrainer, CHAIN.pretrain_plans)
    config = json.loads((run_dir / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"].endswith("PlainConvUNet")
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64]
    assert config["patch_size"] == [32, 32, 32]
    checkpoint = torch.load(cnn_checkpoint, weights_only=False)  # no map_location, like nnU-Net's loader
    assert checkpoint["network_weights"]["decoder.seg_layers.1.weight"].shape[0] == 1  # reconstruction head
    assert len(checkpoint["logging"]["val_losses"]) == 4 and (run_dir / "fold_0" / "checkpoint_best.pth").is_file()
    metrics = json.loads((run_dir / "fold_0" / "validation" / "reconstruction_metrics.json").read_text())
    assert np.isfinite(metrics["mean_masked_l1"])
    log = next((run_dir / "fold_0").glob("training_log_*.txt")).read_text()
    assert "HU foreground criterion" in log


def test_cnn_demo_fine_tunes_through_label_efficiency_and_nnunet_validation(cnn_demo_run):
    """The demo's label-efficiency runs: nnUNetv2_train from the checkpoint (carried over, the leakage guard checked)
    and from scratch, each validated by nnU-Net on the held-out cases, whose predictions keep the input geometry."""
    workdir, env, done = cnn_demo_run
    folds = demo_label_efficiency_folds(workdir)
    assert sorted(folds) == [("pretrained", 1), ("pretrained", 2), ("scratch", 1), ("scratch", 2)]
    for (arm, _), fold in folds.items():
        log = next(fold.glob("training_log_*.txt")).read_text()
        assert ("carried over" in log) == (arm == "pretrained"), fold
        assert fold.parent.name.startswith((CHAIN.finetuner if arm == "pretrained" else CHAIN.scratch) + "__")
        assert_predictions_with_input_geometry(fold / "validation", env)
        summary = json.loads((fold / "validation" / "summary.json").read_text())
        assert set(summary["mean"]) == {"1", "2", "3"}  # liver, spleen, kidneys
        assert len(summary["metric_per_case"]) == len(demo_heldout_images(env))
    # leakage guard: the downstream phantoms are not the pretraining phantoms
    overlap = json.loads((folds["pretrained", 1] / "pretraining_overlap.json").read_text())
    assert overlap["checked"] is True and overlap["shared"] == []
    assert overlap["cases_checked"]["validation"] == len(demo_heldout_images(env))
    assert not (folds["scratch", 1] / "pretraining_overlap.json").exists()
    # the pretrained arm starts from the encoder-only checkpoint (adapt-checkpoint --encoder-only)
    from nnunet_subfore.demo import ENCODER_ONLY_CHECKPOINT, LABEL_EFFICIENCY_FOLDER

    record = json.loads((workdir / LABEL_EFFICIENCY_FOLDER / "label_efficiency.json").read_text())
    started = {Path(r["checkpoint"]).resolve() for r in record["runs"] if r["arm"] == "pretrained"}
    assert started == {(workdir / "checkpoints" / ENCODER_ONLY_CHECKPOINT).resolve()}
    assert "encoder-only" in done.stdout and "adapt-checkpoint" in done.stdout


def test_stock_nnunet_trainer_loads_every_tensor_but_the_heads(cnn_demo_run, cnn_checkpoint, monkeypatch):
    """nnU-Net's own -pretrained_weights path with the stock nnUNetTrainer, in-process, tensor by tensor."""
    _, env, _ = cnn_demo_run
    use_env(monkeypatch, env)
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = get_trainer_from_args(str(DOWNSTREAM_ID), "3d_fullres", 4, "nnUNetTrainer", CHAIN.downstream_plans,
                                    device=torch.device("cpu"))
    assert type(trainer) is nnUNetTrainer
    maybe_load_checkpoint(trainer, False, False, str(cnn_checkpoint))
    loaded = trainer.network.state_dict()
    pretrained = torch.load(cnn_checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    body = [k for k in loaded if ".seg_layers." not in k]
    assert len(body) > 40 and any(k.startswith("decoder.stages.") for k in body)
    for key in body:
        assert torch.equal(loaded[key], pretrained[key]), key
    head = [k for k in loaded if ".seg_layers." in k]
    assert head and all(loaded[k].shape[0] == 4 for k in head if k.endswith(".weight"))  # background + 3 organs


def test_stock_trainer_fine_tunes_through_the_commands_and_predicts(cnn_demo_run, cnn_checkpoint, tmp_path):
    _, env, _ = cnn_demo_run
    run(["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "0", "-tr", STOCK_SHORT, "-p", CHAIN.downstream_plans,
         "-device", "cpu", "-pretrained_weights", str(cnn_checkpoint)], env, training=True)
    run_dir = result_folder(env, DOWNSTREAM, STOCK_SHORT, CHAIN.downstream_plans)
    summary = json.loads((run_dir / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2", "3"}
    pred = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(heldout_input_folder(env, tmp_path / "heldout")), "-o", str(pred),
         "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres", "-tr", STOCK_SHORT, "-p", CHAIN.downstream_plans, "-f", "0",
         "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    assert_predictions_with_input_geometry(pred, env)


def test_subfore_cnn_finetune_trainer_takes_the_checkpoint(cnn_demo_run, cnn_checkpoint):
    _, env, _ = cnn_demo_run
    trainer = "SubForeCNNFinetuneTrainer_short"
    run(["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "0", "-tr", trainer, "-p", CHAIN.downstream_plans,
         "-device", "cpu", "-pretrained_weights", str(cnn_checkpoint)], env, training=True)
    fold = result_folder(env, DOWNSTREAM, trainer, CHAIN.downstream_plans) / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "carried over" in log and "MISSING" not in log
    saved = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    assert saved["init_args"]["plans"]["plans_name"] == CHAIN.downstream_plans
    assert json.loads((fold / "validation" / "summary.json").read_text())["mean"]


def test_intensity_trap_stops_cnn_pretraining_on_organ_labelled_plans(cnn_demo_run):
    """The downstream set's own nnUNetPlans clip CT at its labelled organs: the masking would see no air."""
    _, env, _ = cnn_demo_run
    plans = json.loads((Path(env["nnUNet_preprocessed"]) / DOWNSTREAM / "nnUNetPlans.json").read_text())
    assert plans["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] > -132.5
    done = run(["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "0", "-tr", CHAIN.pretrainer, "-device", "cpu"],
               env, training=True, check=False)
    assert done.returncode != 0
    assert "every subvolume would count as foreground" in done.stderr
    assert "register-unlabeled" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="session")
def resenc_m_tiny_plans(cnn_demo_run) -> str:
    """The pretraining set planned with nnUNetPlannerResEncM, its tiny preset, preprocessed."""
    _, env, _ = cnn_demo_run
    run(["nnUNetv2_plan_experiment", "-d", str(PRETRAIN_ID), "-pl", "nnUNetPlannerResEncM"], env)
    name = "SubForeTinyResEncMPlans"
    run(["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn", "--source-plans", "nnUNetResEncUNetMPlans",
         "--plans-name", name], env)
    run(["nnUNetv2_preprocess", "-d", str(PRETRAIN_ID), "-plans_name", name, "-c", "3d_fullres", "-np", "1"], env)
    return name


@pytest.mark.parametrize("plans_kind", ["default", "resenc_m"])
def test_cnn_pretraining_lowers_the_reconstruction_loss(cnn_demo_run, plans_kind, request, monkeypatch):
    """nnUNetv2_train makes the masked reconstruction of fixed patches and masks better than fresh networks do.

    As for the transformers (test_pipeline.test_pretraining_loss_falls): the trained network and three
    freshly initialized ones are scored on the centre patch of every case, masked 8 times with a fixed seed.
    """
    _, env, _ = cnn_demo_run
    if plans_kind == "default":
        plans, arch = CHAIN.pretrain_plans, "PlainConvUNet"
    else:
        plans, arch = request.getfixturevalue("resenc_m_tiny_plans"), "ResidualEncoderUNet"
    trainer_name = "SubForeCNNPretrainTrainer_losstest"
    run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "1", "-tr", trainer_name, "-p", plans, "-device", "cpu"],
        env, training=True)
    checkpoint = torch.load(result_folder(env, PRETRAIN, trainer_name, plans) / "fold_1" / "checkpoint_final.pth",
                            weights_only=False)
    assert np.all(np.isfinite(checkpoint["logging"]["train_losses"]))

    use_env(monkeypatch, env)
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(PRETRAIN_ID), "3d_fullres", 1, trainer_name, plans, device=torch.device("cpu"))
    trainer.initialize()
    assert type(trainer.network).__name__ == arch
    trained, untrained = masked_l1_trained_and_fresh(trainer, checkpoint["network_weights"])
    assert trained < 0.9 * untrained, (trained, untrained)


def test_pretraining_takes_the_planned_resenc_m_network_as_it_is(cnn_demo_run, resenc_m_tiny_plans):
    """`-p nnUNetResEncUNetMPlans` itself: nnU-Net's ResEnc M, its planned features and blocks, patch fitted."""
    _, env, _ = cnn_demo_run
    trainer = "SubForeCNNPretrainTrainer_twoiters"
    run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", trainer, "-p", "nnUNetResEncUNetMPlans",
         "-device", "cpu"], env, training=True)
    run_dir = result_folder(env, PRETRAIN, trainer, "nnUNetResEncUNetMPlans")
    planned = json.loads((Path(env["nnUNet_preprocessed"]) / PRETRAIN / "nnUNetResEncUNetMPlans.json").read_text())
    saved = json.loads((run_dir / "plans.json").read_text())
    arch = saved["configurations"]["3d_fullres"]["architecture"]
    assert arch == planned["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("ResidualEncoderUNet")
    strides = np.prod(np.array(arch["arch_kwargs"]["strides"]), axis=0)
    patch = saved["configurations"]["3d_fullres"]["patch_size"]
    assert all(p % np.lcm(16, s) == 0 for p, s in zip(patch, strides))
    weights = torch.load(run_dir / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert "encoder.stem.convs.0.conv.weight" in weights
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
