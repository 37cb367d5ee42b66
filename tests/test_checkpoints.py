"""Checkpoint transfer: accounting, channel spreading, position embeddings, and a 2-channel dataset end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from subfore_test_helpers import result_folder, run

from nnunet_subfore.paths import dataset_folder_name
from nnunet_subfore.checkpoints import (
    adapt_state_dict,
    compare_state_dicts,
    interpolate_position_embeddings,
    spread_input_channels,
)
from nnunet_subfore.networks import TINY_ARCHITECTURES, build_network


def tiny(backbone, patch=(32, 32, 32), in_ch=1, out_ch=1):
    return build_network(backbone, patch, in_ch, out_ch, TINY_ARCHITECTURES[backbone])


def test_report_accounts_for_every_key():
    pre, fine = tiny("swinunetr").state_dict(), tiny("swinunetr", out_ch=4).state_dict()
    report = compare_state_dicts(fine, pre)
    assert report.ok
    assert len(report.loaded) + len(report.skipped_head) == len(fine)
    assert all(".seg_layers." in k for k in report.skipped_head)
    other = compare_state_dicts(fine, tiny("unetr").state_dict())
    assert not other.ok and other.missing and "MISSING" in other.describe()


def test_a_transposed_weight_is_a_shape_mismatch():
    """Same element count, other shape: nnU-Net's loader would refuse it, so the check must name it."""
    network = tiny("swinunetr").state_dict()
    key = next(k for k, v in network.items() if k.endswith(".weight") and v.ndim == 2 and v.shape[0] != v.shape[1])
    checkpoint = dict(network, **{key: network[key].t().contiguous()})
    report = compare_state_dicts(network, checkpoint)
    assert report.mismatched == [(key, tuple(network[key].shape[::-1]), tuple(network[key].shape))]
    assert not report.ok and key not in report.loaded and "SHAPE MISMATCH: 1 tensors" in report.describe()


def test_spread_channels_keeps_the_response_to_equal_channels():
    weight = torch.randn(8, 1, 3, 3, 3)
    spread = spread_input_channels(weight, 4)
    assert spread.shape == (8, 4, 3, 3, 3)
    x = torch.randn(1, 1, 6, 6, 6)
    a = torch.nn.functional.conv3d(x, weight)
    b = torch.nn.functional.conv3d(x.repeat(1, 4, 1, 1, 1), spread)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_position_embeddings_interpolate_to_the_new_grid():
    emb = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1).repeat(1, 1, 3)
    out = interpolate_position_embeddings(emb, (2, 2, 2), (2, 4, 4))
    assert out.shape == (1, 32, 3)
    same = interpolate_position_embeddings(emb, (2, 2, 2), (2, 2, 2))
    torch.testing.assert_close(same, emb)


def test_adapt_channels_and_unetr_patch():
    pre = tiny("unetr").state_dict()
    target = tiny("unetr", patch=(32, 64, 64), in_ch=2, out_ch=3).state_dict()
    assert not compare_state_dicts(target, pre).ok
    adapted, report = adapt_state_dict(pre, target, "unetr", token_grid=(2, 4, 4), checkpoint_token_grid=(2, 2, 2))
    assert report.ok, report.describe()
    assert "backbone.vit.patch_embedding.position_embeddings" in report.adapted
    assert "backbone.vit.patch_embedding.patch_embeddings.weight" in report.adapted
    # untouched tensors are carried over as they are
    key = "backbone.vit.blocks.0.attn.qkv.weight"
    assert torch.equal(adapted[key], pre[key])


def test_feature_size_cannot_be_adapted():
    pre = tiny("swinunetr").state_dict()
    arch = dict(TINY_ARCHITECTURES["swinunetr"], feature_size=24)
    target = build_network("swinunetr", (32, 32, 32), 1, 1, arch).state_dict()
    _, report = adapt_state_dict(pre, target, "swinunetr")
    assert not report.ok and report.mismatched


@pytest.mark.slow
def test_two_channel_dataset_through_adapt_checkpoint(demo_run, tmp_path):
    """A 2-channel downstream set: the stock loader refuses, adapt-checkpoint spreads the stem, training runs."""
    from nnunet_subfore.data.phantoms import write_labelled_dataset
    from nnunet_subfore.demo import PRETRAIN_ID, PRETRAIN_NAME, PRETRAINER

    _, env, _ = demo_run
    raw = Path(env["nnUNet_raw"])
    dataset = write_labelled_dataset(raw, 993, "TwoChannel", 5, num_test=0, seed=77, shape=(48, 64, 64))
    for image in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")):
        second = sitk.Cast(sitk.ReadImage(str(image)), sitk.sitkInt16) + 50  # a second, shifted "phase"
        sitk.WriteImage(second, str(image).replace("_0000.nii.gz", "_0001.nii.gz"))
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (dataset / "dataset.json").write_text(json.dumps(meta))
    run(["nnUNetv2_plan_and_preprocess", "-d", "993", "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env)

    checkpoint = result_folder(env, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME), PRETRAINER) / "fold_0" / "checkpoint_final.pth"
    train = ["nnUNetv2_train", "993", "3d_fullres", "0", "-tr", "SubForeSwinUNETRTrainer_short", "-device", "cpu",
             "-pretrained_weights"]
    refused = run(train + [str(checkpoint)], env, training=True, check=False)
    assert refused.returncode != 0 and "adapt-checkpoint" in refused.stderr and "Traceback" not in refused.stderr

    adapted = tmp_path / "two_channel.pth"
    plans = Path(env["nnUNet_preprocessed"]) / "Dataset993_TwoChannel" / "nnUNetPlans.json"
    args = ["nnunet-subfore", "adapt-checkpoint", str(checkpoint), "--plans", str(plans), "-c", "3d_fullres",
            "-tr", "SubForeSwinUNETRTrainer_short", "--num-input-channels", "2", "-o", str(adapted)]
    done = run(args, env)
    assert "patch_embed.proj.weight" in done.stdout
    again = run(args, env, check=False)  # never overwrite without --force
    assert again.returncode == 2 and "--force" in again.stderr

    original = torch.load(checkpoint, weights_only=False)["network_weights"]
    stem = torch.load(adapted, weights_only=False)["network_weights"]["backbone.swinViT.patch_embed.proj.weight"]
    torch.testing.assert_close(stem, spread_input_channels(original["backbone.swinViT.patch_embed.proj.weight"], 2))

    run(train + [str(adapted)], env, training=True)
    run_dir = result_folder(env, "Dataset993_TwoChannel", "SubForeSwinUNETRTrainer_short")
    assert (run_dir / "fold_0" / "validation" / "summary.json").is_file()
    shutil.rmtree(dataset)


def test_position_embeddings_follow_each_grid_axis():
    """A non-cubic grid: embeddings that vary along one axis only must keep varying along that axis only.

    Source grid (2, 3, 4) (D, H, W tokens), target (2, 3, 8): only W is resized. Channel c holds the
    token's coordinate on axis c, so after resizing channels 0 and 1 must be unchanged per (d, h) and
    channel 2 must be the 1D linear interpolation (half-pixel centres, clamped at the ends) of 0..3 on 8 points.
    """
    grid, target = (2, 3, 4), (2, 3, 8)
    d, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    emb = torch.stack([d, h, w], dim=-1).reshape(1, 24, 3)
    out = interpolate_position_embeddings(emb, grid, target).reshape(*target, 3)
    for i in range(2):
        for j in range(3):
            assert torch.all(out[i, j, :, 0] == i) and torch.all(out[i, j, :, 1] == j)
    # target W position k has source coordinate (k + 0.5) * 4 / 8 - 0.5, clamped to [0, 3]
    expected_w = torch.tensor([min(max((k + 0.5) / 2 - 0.5, 0.0), 3.0) for k in range(8)])
    torch.testing.assert_close(out[1, 2, :, 2], expected_w)
    # resizing H instead: W coordinates stay, H is interpolated
    out_h = interpolate_position_embeddings(emb, grid, (2, 6, 4)).reshape(2, 6, 4, 3)
    torch.testing.assert_close(out_h[0, :, 3, 2], torch.full((6,), 3.0))
    expected_h = torch.tensor([min(max((k + 0.5) / 2 - 0.5, 0.0), 2.0) for k in range(6)])
    torch.testing.assert_close(out_h[0, :, 0, 1], expected_h)


class _Payload:
    """Pickles as a call that creates a file: what a malicious .pth would run on torch.load(weights_only=False)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_pickle_payload_is_refused_before_it_runs(tmp_path):
    from nnunet_subfore.checkpoints import load_checkpoint
    from nnunet_subfore.errors import UserError

    created = tmp_path / "created_by_payload"
    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {"w": torch.zeros(1)}, "extra": _Payload(created)}, evil)
    with pytest.raises(UserError, match="Refused .*evil.pth.*nothing of it was executed"):
        load_checkpoint(evil)
    assert not created.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load does run it
    assert created.exists()


def test_an_nnunet_style_checkpoint_with_numpy_logs_loads_safely(tmp_path):
    import numpy as np

    from nnunet_subfore.checkpoints import load_checkpoint

    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "logging": {"val_losses": [np.float64(0.5), np.float32(0.25)]},
                "current_epoch": np.int64(3), "_best_ema": None}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["logging"]["val_losses"] == [0.5, 0.25] and checkpoint["current_epoch"] == 3


def test_adapt_checkpoint_and_the_finetune_check_refuse_the_payload(tmp_path, capsys):
    from nnunet_subfore.cli import main
    from nnunet_subfore.trainers.subfore_finetune import SubForeSwinUNETRTrainer

    created = tmp_path / "created_by_payload"
    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "extra": _Payload(created)}, evil)
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [64, 64, 64]}}}))
    assert main(["adapt-checkpoint", str(evil), "--plans", str(plans), "-tr", "SubForeSwinUNETRTrainer",
                 "--num-input-channels", "1", "-o", str(tmp_path / "out.pth")]) == 2
    assert "Refused" in capsys.readouterr().err and not created.exists()

    trainer = SubForeSwinUNETRTrainer.__new__(SubForeSwinUNETRTrainer)  # the pre-check alone, before nnU-Net loads
    trainer.print_to_log_file = lambda *args, **kwargs: None
    with pytest.raises(SystemExit, match="Refused"):
        trainer.check_pretrained_weights(evil)
    assert not created.exists()
