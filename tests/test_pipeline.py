"""End to end through nnU-Net's own commands: the demo chain (pretraining, the reconstruction picture, label-efficiency
runs through nnUNetv2_train and nnU-Net's validation), SwinUNETR and UNETR transfer, predict.

Slow (a few minutes): they share one ``nnunet-subfore demo --quick`` run (conftest.demo_run).
Select with ``pytest -m slow``; CI runs them.
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

from nnunet_subfore.paths import dataset_folder_name
from nnunet_subfore.demo import (
    DOWNSTREAM_ID,
    DOWNSTREAM_NAME,
    DOWNSTREAM_PLANS,
    FINETUNER,
    PRETRAIN_ID,
    PRETRAIN_NAME,
    PRETRAINER,
    SCRATCH,
)

pytestmark = pytest.mark.slow

PRETRAIN = dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
DOWNSTREAM = dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)


def result_dir(env, dataset, trainer, plans="nnUNetPlans") -> Path:
    return result_folder(env, dataset, trainer, plans)


def assert_same_geometry(prediction: Path, image: Path):
    pred, img = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(image))
    assert pred.GetSize() == img.GetSize()
    np.testing.assert_allclose(pred.GetSpacing(), img.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(pred.GetOrigin(), img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pred.GetDirection(), img.GetDirection(), atol=1e-6)


def assert_predictions_for_held_out_cases(pred_dir: Path, env):
    images = demo_heldout_images(env)
    assert images
    for image in images:
        prediction = pred_dir / image.name.replace("_0000.nii.gz", ".nii.gz")
        assert prediction.is_file(), f"no prediction for {image.name}"
        assert_same_geometry(prediction, image)
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(prediction))))) <= {0, 1, 2, 3}


def assert_validation_summary(run_dir: Path, fold: int = 0):
    assert_fold_summary(run_dir / f"fold_{fold}")


def assert_fold_summary(fold: Path):
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2", "3"}  # liver, spleen, kidneys
    assert all(0.0 <= summary["mean"][c]["Dice"] <= 1.0 for c in summary["mean"])


@pytest.fixture(scope="session")
def unetr_checkpoint(demo_run):
    _, env, _ = demo_run
    run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", "SubForePretrainTrainer_UNETR_demo",
         "-device", "cpu"], env, training=True)
    return result_dir(env, PRETRAIN, "SubForePretrainTrainer_UNETR_demo") / "fold_0" / "checkpoint_final.pth"


def test_demo_prints_the_table_its_reading_and_writes_its_outputs(demo_run):
    workdir, _, done = demo_run
    out = done.stdout
    assert "## Label efficiency" in out and "| pretrained | 2 | 1 |" in out and "| scratch | 1 | 1 |" in out
    reading = next(line for line in out.splitlines() if line.startswith("Reading: "))
    assert reading.startswith("Reading: pretrained vs scratch, held-out Dice points: ") and " at 1 labelled case, " in reading
    record = json.loads((workdir / "label_efficiency" / "label_efficiency.json").read_text())
    rows = {(r["arm"], r["labelled_cases"]): r for r in record["rows"]}
    difference = 100 * rows["pretrained", 1]["difference_to_scratch"]["mean"]
    assert f"{difference:+.1f} at 1 labelled case" in reading  # the reading is computed from the numbers
    if all(rows["pretrained", n]["dice_mean"] < 0.01 for n in (1, 2)):  # a silent arm is explained, not just listed
        assert "learned nothing" in out or "no arm learned an organ" in out
    for name in (FINETUNER, SCRATCH, "masked L1", "best constant"):
        assert name in out
    assert (workdir / "reconstruction.png").stat().st_size > 10_000
    assert str(workdir / "reconstruction.png") in out
    for suffix in ("md", "csv", "json", "png"):
        assert (workdir / "label_efficiency" / f"label_efficiency.{suffix}").is_file(), suffix
    assert "Traceback" not in done.stderr


def test_pretraining_run_is_complete_and_loads_on_cpu(demo_run):
    _, env, _ = demo_run
    run_dir = result_dir(env, PRETRAIN, PRETRAINER)
    plans = json.loads((run_dir / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [32, 32, 32]
    fold = run_dir / "fold_0"
    assert (fold / "checkpoint_best.pth").is_file()
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=False)  # no map_location, like nnU-Net's loader
    assert all(t.device.type == "cpu" for t in checkpoint["network_weights"].values())
    logging = checkpoint["logging"]
    assert len(logging["val_losses"]) == len(logging["train_losses"]) == 4
    metrics = json.loads((fold / "validation" / "reconstruction_metrics.json").read_text())
    assert np.isfinite(metrics["mean_masked_l1"]) and metrics["per_case"]
    for case in metrics["per_case"].values():  # Bernoulli foreground masking masks foreground only
        assert 0.0 < case["foreground_fraction"] <= 1.0 and case["masked_fraction"] <= case["foreground_fraction"]
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "HU foreground criterion" in log and "Pseudo dice" not in log
    # leakage guard: every pretraining case's content fingerprint, in the checkpoint and the fold folder
    recorded = checkpoint["subfore_pretraining_fingerprints"]
    assert len(recorded["cases"]) == 6 and json.loads((fold / "pretraining_fingerprints.json").read_text()) == recorded


def test_pretrained_weights_transfer_exactly(demo_run, monkeypatch):
    """nnU-Net's own -pretrained_weights path, in-process: every tensor but the head equals the checkpoint's."""
    _, env, _ = demo_run
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    checkpoint = result_dir(env, PRETRAIN, PRETRAINER) / "fold_0" / "checkpoint_final.pth"
    trainer = get_trainer_from_args(str(DOWNSTREAM_ID), "3d_fullres", 4, FINETUNER, DOWNSTREAM_PLANS,
                                    device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, str(checkpoint))
    loaded = trainer.network.state_dict()
    pretrained = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    body = [k for k in loaded if ".seg_layers." not in k]
    assert len(body) > 100
    for key in body:
        assert torch.equal(loaded[key], pretrained[key]), key
    head = [k for k in loaded if ".seg_layers." in k]
    assert head and loaded[head[0]].shape[0] == 4 and pretrained[head[0]].shape[0] == 1


def test_swinunetr_finetuning_validation_and_predictions(demo_run):
    """The demo's label-efficiency runs: nnUNetv2_train with and without -pretrained_weights, validated by nnU-Net on
    the held-out cases (predictions on the input grid), the leakage guard checked."""
    workdir, env, _ = demo_run
    folds = demo_label_efficiency_folds(workdir)
    assert sorted(folds) == [("pretrained", 1), ("pretrained", 2), ("scratch", 1), ("scratch", 2)]
    for (arm, _), fold in folds.items():
        assert fold.parent.name.startswith((FINETUNER if arm == "pretrained" else SCRATCH) + "__")
        assert_fold_summary(fold)
        assert json.loads((fold.parent / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"] == [32, 32, 32]
        assert_predictions_for_held_out_cases(fold / "validation", env)
    log = next(folds["pretrained", 1].glob("training_log_*")).read_text()
    assert "carried over" in log
    # leakage guard: the demo's downstream phantoms are not its pretraining phantoms
    overlap = json.loads((folds["pretrained", 1] / "pretraining_overlap.json").read_text())
    assert overlap["checked"] is True and overlap["shared"] == []
    assert overlap["cases_checked"]["validation"] == len(demo_heldout_images(env))


def test_checkpoint_of_the_other_backbone_gives_a_clear_error(demo_run, unetr_checkpoint):
    _, env, _ = demo_run
    done = run(["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "1", "-tr", "SubForeSwinUNETRTrainer_short",
                "-p", DOWNSTREAM_PLANS, "-device", "cpu", "-pretrained_weights", str(unetr_checkpoint)],
               env, training=True, check=False)
    assert done.returncode != 0
    assert "is a unetr network" in done.stderr and "SubForeUNETRTrainer" in done.stderr
    assert "Traceback" not in done.stderr


def test_unetr_chain_at_another_patch_through_adapt_checkpoint(demo_run, unetr_checkpoint, tmp_path):
    _, env, _ = demo_run
    trainer = "SubForeUNETRTrainer_widepatch"
    train = ["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "0", "-tr", trainer, "-p", DOWNSTREAM_PLANS,
             "-device", "cpu", "-pretrained_weights"]
    # the stock loader cannot take other position embeddings: a clear error that names the fix
    refused = run(train + [str(unetr_checkpoint)], env, training=True, check=False)
    assert refused.returncode != 0 and "adapt-checkpoint" in refused.stderr and "Traceback" not in refused.stderr

    adapted = tmp_path / "adapted.pth"
    plans = Path(env["nnUNet_preprocessed"]) / DOWNSTREAM / f"{DOWNSTREAM_PLANS}.json"
    done = run(["nnunet-subfore", "adapt-checkpoint", str(unetr_checkpoint), "--plans", str(plans), "-c", "3d_fullres",
                "-tr", trainer, "--num-input-channels", "1", "-o", str(adapted)], env)
    assert "position_embeddings" in done.stdout
    pos = torch.load(adapted, weights_only=False)["network_weights"]["backbone.vit.patch_embedding.position_embeddings"]
    assert pos.shape[1] == 2 * 4 * 4

    run(train + [str(adapted)], env, training=True)
    run_dir = result_dir(env, DOWNSTREAM, trainer, DOWNSTREAM_PLANS)
    assert_validation_summary(run_dir)
    pred = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(heldout_input_folder(env, tmp_path / "heldout")), "-o", str(pred),
         "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres", "-tr", trainer, "-p", DOWNSTREAM_PLANS, "-f", "0",
         "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    assert_predictions_for_held_out_cases(pred, env)


def test_pretraining_loss_falls(demo_run, monkeypatch):
    """nnUNetv2_train lowers the masked reconstruction loss on fixed patches and masks below that of fresh networks.

    Per-epoch training losses of a tiny network over 12 random batches are too noisy to compare
    epochs (they swing by 10 %), so the trained network and three freshly initialized ones are
    scored on the same data: the centre patch of every case, masked 8 times with a fixed seed.
    """
    _, env, _ = demo_run
    trainer_name = "SubForePretrainTrainer_losstest"
    run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "1", "-tr", trainer_name, "-device", "cpu"], env,
        training=True)
    checkpoint = torch.load(result_dir(env, PRETRAIN, trainer_name) / "fold_1" / "checkpoint_final.pth",
                            weights_only=False)
    train_losses = checkpoint["logging"]["train_losses"]
    assert len(train_losses) == 6 and np.all(np.isfinite(train_losses))

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(PRETRAIN_ID), "3d_fullres", 1, trainer_name, device=torch.device("cpu"))
    trainer.initialize()
    trained, untrained = masked_l1_trained_and_fresh(trainer, checkpoint["network_weights"], fresh_networks=5)
    # measured on the demo's phantoms (quick): fresh networks 0.74-0.94 (seeds 0-9; mean of seeds 0-4 0.81), a
    # network predicting zero 0.80; trained 0.64-0.71 in 7 runs of 72 iterations (ratio 0.79-0.88 to the mean of
    # 5), and not lower after 144 iterations or at lr 3e-3: the tiny SwinUNETR levels off there
    assert trained < 0.92 * untrained, (trained, untrained)


def test_intensity_trap_stops_pretraining_at_initialization(demo_run):
    """The downstream set's own plans clip CT at its labelled organs (tens of HU): masking would see no air."""
    _, env, _ = demo_run
    plans = json.loads((Path(env["nnUNet_preprocessed"]) / DOWNSTREAM / "nnUNetPlans.json").read_text())
    assert plans["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] > -132.5
    done = run(["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", "0", "-tr", PRETRAINER, "-device", "cpu"],
               env, training=True, check=False)
    assert done.returncode != 0
    assert "every subvolume would count as foreground" in done.stderr
    assert "register-unlabeled" in done.stderr and "--hu-window" in done.stderr
    assert "Traceback" not in done.stderr


def test_batch_without_foreground_trains_without_error(demo_run, monkeypatch):
    """An all-air batch: nothing is masked, the loss is 0, the step runs (in-process trainer on the demo plans)."""
    _, env, _ = demo_run
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(PRETRAIN_ID), "3d_fullres", 3, PRETRAINER, device=torch.device("cpu"))
    trainer.initialize()
    air = trainer.plans_manager.plans["foreground_intensity_properties_per_channel"]["0"]
    air_normalized = (air["percentile_00_5"] - air["mean"]) / air["std"]
    batch = {"data": torch.full((2, 1, 32, 32, 32), air_normalized), "target": torch.zeros(2, 1, 32, 32, 32)}
    assert float(trainer.train_step(batch)["loss"]) == 0.0
    masked = trainer.masker(batch["data"])
    assert not masked.voxel_mask.any() and not masked.foreground.any()
    # the loss had a graph: backward ran and produced zero gradients, no NaN anywhere
    grads = [p.grad for p in trainer.network.parameters() if p.grad is not None]
    assert grads and all((g == 0).all() for g in grads)
    assert all(torch.isfinite(v).all() for v in trainer.network.state_dict().values() if v.is_floating_point())
    # a batch of soft tissue is masked and gives a positive loss
    tissue = (40.0 - air["mean"]) / air["std"]
    assert float(trainer.train_step({"data": torch.full((2, 1, 32, 32, 32), tissue), "target": batch["target"]})["loss"]) > 0


def test_pretraining_checkpoint_resumes(demo_run, monkeypatch):
    """What `--c` does: a fresh trainer loads checkpoint_final.pth and carries on where it stopped."""
    _, env, _ = demo_run
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    trainer = get_trainer_from_args(str(PRETRAIN_ID), "3d_fullres", 0, PRETRAINER, continue_training=True,
                                    device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, True, False)
    saved = torch.load(result_dir(env, PRETRAIN, PRETRAINER) / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert trainer.current_epoch == saved["current_epoch"] == 4
    assert trainer.logger.get_value("val_losses", step=None) == saved["logging"]["val_losses"]
    # the best smoothed validation loss lives in the restored log, not in nnU-Net's private _best_ema
    ema = trainer.logger.get_value("ema_val_losses", step=None)
    assert ema == saved["logging"]["ema_val_losses"] and len(ema) == 4 and np.all(np.isfinite(ema))
    assert trainer.optimizer.state_dict()["state"]  # AdamW moments restored


def test_cpu_trainer_honours_omp_num_threads(demo_run, monkeypatch):
    """nnUNetv2_train -device cpu sets one thread per core; an explicit OMP_NUM_THREADS wins (two trainings can share)."""
    _, env, _ = demo_run
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from nnunetv2.run.run_training import get_trainer_from_args

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what nnUNetv2_train -device cpu does on a 2-core machine
        get_trainer_from_args(str(PRETRAIN_ID), "3d_fullres", 2, PRETRAINER, device=torch.device("cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
