"""Weights that travel with nnU-Net master and nnssl (issue 20, items 1-2).

The contract tests encode what nnU-Net master reads of a checkpoint (MIC-DKFZ/nnUNet, branch master:
``nnunetv2/experiment_planning/like_nnssl.py`` at 202f6baa and
``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py`` at 3605eea1); where the installed
nnU-Net has that code (found by import, not by version), the test also runs nnU-Net's own loader.
The nnssl checkpoints are built here from the documented format (DESIGN.md 6.1): no download.
"""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from subfore_test_helpers import (
    REQUIRES_IMPORT,
    RESENC,
    TINY_CT_DATASET,
    TINY_RESENC_KWARGS,
    build,
    nnssl_checkpoint,
    tiny_ct_plans,
)

from nnunet_subfore.adaptation_plan import (
    ADAPTATION_PLAN_KEY,
    REQUIRED_ARCHITECTURE_KEYS,
    REQUIRED_PLAN_KEYS,
    adaptation_plan_problems,
)
from nnunet_subfore.errors import UserError
from nnunet_subfore.plain_values import plain_values

# ------------------------------------------------------------------------------------------------ item 1
def test_plain_values_turn_numpy_into_python_and_leave_tensors():
    value = {"a": [np.float64(0.5), np.float32(0.25)], "b": (np.int64(3), np.bool_(True)), "c": np.arange(2),
             "t": torch.ones(1), "d": torch.device("cpu")}
    plain = plain_values(value)
    assert plain["a"] == [0.5, 0.25] and type(plain["a"][0]) is float
    assert plain["b"] == (3, True) and type(plain["b"][0]) is int and type(plain["b"][1]) is bool
    assert plain["c"] == [0, 1] and plain["t"] is value["t"] and plain["d"] == torch.device("cpu")


def _pretrain_trainer(plans, network):
    """A SubForeCNNPretrainTrainer as far as writing a checkpoint goes (nnU-Net's logger with numpy values)."""
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    from nnunet_subfore.trainers.subfore_cnn import SubForeCNNPretrainTrainer

    logger = MetaLogger(None, False)
    for epoch in range(2):
        logger.log("train_losses", np.float64(0.5 - 0.1 * epoch), epoch)
        logger.log("val_losses", np.float32(0.4 - 0.1 * epoch), epoch)
        logger.log("mean_fg_dice", np.float64(0.1 * epoch), epoch)
        logger.log("dice_per_class_or_region", [np.float64(0.1 * epoch)], epoch)
        logger.log("epoch_start_timestamps", 1.0 + epoch, epoch)
        logger.log("epoch_end_timestamps", 2.0 + epoch, epoch)
        logger.log("lrs", np.float64(0.01), epoch)
    trainer = object.__new__(SubForeCNNPretrainTrainer)
    trainer.__dict__.update(
        local_rank=0, disable_checkpointing=False, is_ddp=False, network=network,
        optimizer=torch.optim.SGD(network.parameters(), 0.01, momentum=0.99, nesterov=True), grad_scaler=None,
        logger=logger, _best_ema=np.float64(0.3), current_epoch=1, num_input_channels=1,
        my_init_kwargs={"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": TINY_CT_DATASET,
                        "device": torch.device("cpu")},
        inference_allowed_mirroring_axes=(0, 1, 2), plans_manager=SimpleNamespace(plans=plans),
        configuration_name="3d_fullres", pretraining_fingerprints=None)
    return trainer


def _resenc_plans(kwargs=TINY_RESENC_KWARGS):
    plans = tiny_ct_plans()
    plans["configurations"]["3d_fullres"]["architecture"] = {"network_class_name": RESENC, "arch_kwargs": kwargs,
                                                             "_kw_requires_import": REQUIRES_IMPORT}
    return plans


def _write_pretraining_checkpoint(tmp_path, plans):
    from nnunet_subfore.trainers.subfore_nnunet_copies import save_checkpoint_atomically

    arch = plans["configurations"]["3d_fullres"]["architecture"]
    network = build(arch["network_class_name"], arch["arch_kwargs"], 1, 1)
    path = tmp_path / "checkpoint_final.pth"
    save_checkpoint_atomically(_pretrain_trainer(plans, network), str(path))
    return path, network


def test_a_cnn_pretraining_checkpoint_loads_weights_only_and_resumes_its_log(tmp_path):
    """--c after the conversion: nnU-Net's logger gets the same numbers back (as Python floats)."""
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    path, _ = _write_pretraining_checkpoint(tmp_path, _resenc_plans())
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # raised "Weights only load failed" before
    resumed = MetaLogger(None, True)
    resumed.load_checkpoint(checkpoint["logging"])  # what nnUNetTrainer.load_checkpoint does on --c
    assert resumed.get_value("val_losses", step=-1) == pytest.approx(0.3)
    assert resumed.local_logger.my_fantastic_logging["train_losses"] == pytest.approx([0.5, 0.4])
    assert checkpoint["_best_ema"] == pytest.approx(0.3) and type(checkpoint["_best_ema"]) is float
    assert checkpoint["init_args"]["device"] == torch.device("cpu")


def _load_like_nnunet_master(path, downstream_channels=1, num_classes=4):
    """What nnU-Net master does with a checkpoint, step by step (like_nnssl.py, then
    PretrainedTrainer.build_network_architecture and load_pretrained_weights): returns (network, plan)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    plan = checkpoint[ADAPTATION_PLAN_KEY]
    for key in REQUIRED_PLAN_KEYS:  # like_nnssl.py reads these with [] (no default)
        assert key in plan, key
    for key in REQUIRED_ARCHITECTURE_KEYS:
        assert key in plan["architecture_plans"], key
    pretraining = list(plan["pretrain_plan"]["configurations"].values())[0]
    assert len(pretraining["spacing"]) == 3 and len(pretraining["patch_size"]) == 3
    assert len(plan["recommended_downstream_patchsize"]) == 3 and plan["pretrain_num_input_channels"] >= 1
    arch = plan["architecture_plans"]  # PretrainedTrainer builds names ending so with get_network_from_plans
    assert arch["arch_class_name"].endswith(("PlainConvUNet", "ResidualEncoderUNet"))
    network = build(arch["arch_class_name"], arch["arch_kwargs"], downstream_channels, num_classes, seed=1)
    weights = checkpoint["network_weights"]
    for pt_key, key in ((plan["key_to_encoder"], network.key_to_encoder), (plan["key_to_stem"], network.key_to_stem)):
        part = {k[len(pt_key) + 1:]: v for k, v in weights.items() if k.startswith(pt_key + ".")}
        network.get_submodule(key).load_state_dict(part)  # strict, as nnU-Net master loads
    for key in plan["keys_to_in_proj"]:
        assert f"{key}.weight" in weights
    return network, plan


@pytest.mark.parametrize("arch", ["resenc", "plain"])
def test_the_adaptation_plan_meets_nnunet_masters_contract(tmp_path, arch):
    plans = _resenc_plans() if arch == "resenc" else tiny_ct_plans()
    path, pretrained = _write_pretraining_checkpoint(tmp_path, plans)
    network, plan = _load_like_nnunet_master(path)
    assert adaptation_plan_problems(plan) == []
    assert plan["pretrain_plan"]["configurations"]["3d_fullres"]["spacing"] == [2.0, 2.0, 2.0]
    assert plan["recommended_downstream_patchsize"] == [32, 32, 32] and plan["pretrain_num_input_channels"] == 1
    assert plan["key_to_stem"] == ("encoder.stem" if arch == "resenc" else "encoder.stages.0")
    encoder = network.get_submodule(network.key_to_encoder).state_dict()
    source = pretrained.get_submodule(pretrained.key_to_encoder).state_dict()
    assert encoder.keys() == source.keys() and all(torch.equal(encoder[k], source[k]) for k in encoder)


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2.training.nnUNetTrainer.pretraining") is None,
                    reason="the installed nnU-Net has no pretrained fine-tuning (nnU-Net master's PretrainedTrainer)")
def test_nnunet_masters_own_loader_takes_the_checkpoint(tmp_path):
    from nnunetv2.training.nnUNetTrainer.pretraining.pretrainedTrainer import PretrainedTrainer

    path, pretrained = _write_pretraining_checkpoint(tmp_path, _resenc_plans())
    plan = torch.load(path, weights_only=True)[ADAPTATION_PLAN_KEY]
    network = build(RESENC, TINY_RESENC_KWARGS, 1, 4, seed=1)
    PretrainedTrainer.load_pretrained_weights(
        network, str(path), plan["pretrain_num_input_channels"], 1, plan["recommended_downstream_patchsize"],
        [32, 32, 32], plan["key_to_encoder"], plan["key_to_stem"], tuple(plan["keys_to_in_proj"]), plan["key_to_lpe"])
    for key, value in pretrained.encoder.state_dict().items():
        assert torch.equal(network.encoder.state_dict()[key], value), key


# ------------------------------------------------------------------------------------------------ item 2
@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """Dataset990_TinyCT planned (nnUNetPlans.json, 2 mm) under a fresh nnUNet_preprocessed."""
    root = tmp_path / "preprocessed"
    folder = root / "Dataset990_TinyCT"
    folder.mkdir(parents=True)
    (folder / "nnUNetPlans.json").write_text(json.dumps(tiny_ct_plans()))
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    return folder


@pytest.fixture
def nnssl_tiny(tmp_path):
    network = build(RESENC, TINY_RESENC_KWARGS, 1, 1, seed=3)  # MAE: outputs = inputs
    return nnssl_checkpoint(tmp_path / "nnssl.pth", network, arch_kwargs=TINY_RESENC_KWARGS), network


def test_plans_from_an_nnssl_checkpoint(dataset, nnssl_tiny):
    from nnunet_subfore.plans import write_subfore_plans

    written = write_subfore_plans(990, target_plans="FromNNSSL", from_checkpoint=nnssl_tiny[0])
    config = json.loads(written.read_text())["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"] == RESENC
    assert config["architecture"]["arch_kwargs"] == TINY_RESENC_KWARGS
    assert config["spacing"] == [1.0, 1.0, 1.0] and config["patch_size"] == [32, 32, 32]  # nnssl's, not 2 mm
    assert config["normalization_schemes"] == ["CTNormalization"]  # the CT normalization stays
    assert config["data_identifier"] == "FromNNSSL_3d_fullres" and config["batch_size"] == 2


def test_the_named_resenc_l_resolves_to_the_network_nnssl_builds():
    """The real layout: 956 state-dict tensors (DESIGN.md 6.1), every one present and shaped as a fine-tuning
    network needs (built on the meta device: shapes, no memory, no training)."""
    from nnunet_subfore.checkpoints import compare_state_dicts
    from nnunet_subfore.pretrained_plans import resolve_architecture

    arch = resolve_architecture({"arch_class_name": "ResEncL", "arch_kwargs": None,
                                 "arch_kwargs_requiring_import": None})
    with torch.device("meta"):
        pretrained = build(arch["network_class_name"], arch["arch_kwargs"], 1, 1).state_dict()
        finetune = build(arch["network_class_name"], arch["arch_kwargs"], 1, 14).state_dict()
    assert len(pretrained) == 956
    assert sum(k.startswith("decoder.encoder.") for k in pretrained) == sum(k.startswith("encoder.") for k in pretrained)
    assert "encoder.stem.convs.0.conv.weight" in pretrained and "encoder.stem.convs.0.all_modules.0.weight" in pretrained
    report = compare_state_dicts(finetune, pretrained)
    assert report.ok and all(".seg_layers." in k for k in report.skipped_head)
    assert pretrained["encoder.stages.5.blocks.5.conv2.conv.weight"].shape == (320, 320, 3, 3, 3)


def test_a_name_without_arch_kwargs_that_is_no_preset_is_refused():
    from nnunet_subfore.pretrained_plans import resolve_architecture

    with pytest.raises(UserError, match="'PrimusM'.*supported: ResEncL"):
        resolve_architecture({"arch_class_name": "PrimusM", "arch_kwargs": None})


def _adapt(plans_file, checkpoint, output, trainer="nnUNetTrainer", channels=1):
    from nnunet_subfore.checkpoints import adapt_checkpoint, load_checkpoint
    from nnunet_subfore.registry import build_trainer_network, suggested_trainers

    target = build_trainer_network(trainer, plans_file, "3d_fullres", channels)
    return adapt_checkpoint(checkpoint, load_checkpoint(checkpoint), target, trainer, output,
                            suggested_trainers(trainer))


@pytest.mark.parametrize("trainer", ["nnUNetTrainer", "SubForeCNNFinetuneTrainer"])
def test_an_nnssl_checkpoint_fine_tunes_through_pretrained_weights(dataset, nnssl_tiny, tmp_path, trainer):
    """plans --from-checkpoint, adapt-checkpoint, then nnU-Net's own -pretrained_weights loader: the encoder
    arrives tensor by tensor."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunet_subfore.plans import write_subfore_plans
    from nnunet_subfore.registry import build_trainer_network

    path, pretrained = nnssl_tiny
    plans_file = write_subfore_plans(990, target_plans="FromNNSSL", from_checkpoint=path)
    report = _adapt(plans_file, path, tmp_path / "adapted.pth", trainer)
    assert report.transfer.ok
    adapted = torch.load(tmp_path / "adapted.pth", weights_only=True)
    assert adapted["citations"][0]["name"] == "test"
    network = build_trainer_network(trainer, plans_file, "3d_fullres", 1, num_output_channels=4, seed=9).network
    load_pretrained_weights(network, str(tmp_path / "adapted.pth"))
    for key, value in pretrained.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(network.state_dict()[key], value), key


def test_missing_aliases_are_filled_and_disagreeing_ones_refused(dataset, nnssl_tiny, tmp_path):
    from nnunet_subfore.plans import write_subfore_plans

    path, pretrained = nnssl_tiny
    plans_file = write_subfore_plans(990, target_plans="FromNNSSL", from_checkpoint=path)
    weights = {k: v.clone() for k, v in pretrained.state_dict().items() if not k.startswith("decoder.encoder.")}
    partial = nnssl_checkpoint(tmp_path / "partial.pth", pretrained, arch_kwargs=TINY_RESENC_KWARGS, weights=weights)
    report = _adapt(plans_file, partial, tmp_path / "a.pth", channels=2)  # and two channels: the stem is spread
    assert report.transfer.ok and any("aliases" in n for n in report.notes)
    adapted = torch.load(tmp_path / "a.pth", weights_only=True)["network_weights"]
    stem = "encoder.stem.convs.0.conv.weight"
    assert adapted[stem].shape[1] == 2 and torch.equal(adapted[stem], adapted["decoder." + stem])
    assert torch.allclose(adapted[stem].sum(1), weights[stem].sum(1), atol=1e-6)

    weights["decoder.encoder.stem.convs.0.conv.weight"] = weights[stem] + 1
    broken = nnssl_checkpoint(tmp_path / "broken.pth", pretrained, arch_kwargs=TINY_RESENC_KWARGS, weights=weights)
    with pytest.raises(UserError, match="name one tensor .* different values"):
        _adapt(plans_file, broken, tmp_path / "b.pth")


def test_the_plans_command_reads_a_checkpoint(dataset, nnssl_tiny, tmp_path, capsys):
    from nnunet_subfore.cli import main

    assert main(["plans", "-d", "990", "--from-checkpoint", str(nnssl_tiny[0]), "--plans-name", "FromNNSSL"]) == 0
    out = capsys.readouterr().out
    assert "nnUNetv2_preprocess -d Dataset990_TinyCT -plans_name FromNNSSL" in out
    bare = tmp_path / "bare.pth"
    torch.save({"network_weights": nnssl_tiny[1].state_dict()}, bare)
    assert main(["plans", "-d", "990", "--from-checkpoint", str(bare), "--plans-name", "Other"]) == 2
    assert "carries no nnssl_adaptation_plan" in capsys.readouterr().err
