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
    run(["nnUNetv2_plan_and_preprocess", "-d", "993", "-c", "3d_fullres", "-np", "1"], env)

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
