"""nnU-Net's own CNNs as SubFore networks: built from plans, patch rules, tiny preset, transfer, adaptation."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_subfore.checkpoints import CNN_PATCH_NOTE, adapt_checkpoint, compare_state_dicts
from nnunet_subfore.cli import main
from nnunet_subfore.errors import UserError
from nnunet_subfore.networks import (
    CNN_BACKBONE,
    TrainerNetwork,
    backbone_of_state_dict,
    build_plans_network,
    cnn_patch_divisors,
    cnn_stem_keys,
    valid_patch_size,
)
from nnunet_subfore.plans import derive_tiny_cnn_plans
from nnunet_subfore.registry import build_trainer_network
from nnunet_subfore.schedules import WarmupPolyLRScheduler
from nnunet_subfore.trainers.subfore_cnn import (
    SubForeCNNFinetuneTrainer,
    SubForeCNNFinetuneTrainer_scratch,
    SubForeCNNPretrainTrainer,
    SubForeRandomMaskCNNPretrainTrainer,
)

_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]
_COMMON = dict(conv_op="torch.nn.modules.conv.Conv3d", conv_bias=True,
               norm_op="torch.nn.modules.instancenorm.InstanceNorm3d", norm_op_kwargs={"eps": 1e-05, "affine": True},
               dropout_op=None, dropout_op_kwargs=None, nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True})
#: What nnU-Net 2.8 plans for an anisotropic CT set (default planner): 5 stages, total stride (4, 16, 16).
PLAIN_ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": dict(n_stages=5, features_per_stage=[32, 64, 128, 256, 320],
                        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                        n_conv_per_stage=[2] * 5, n_conv_per_stage_decoder=[2] * 4, **_COMMON),
    "_kw_requires_import": _IMPORTS,
}
#: nnUNetPlannerResEncM's network class and block layout (6 stages, total stride 32).
RESENC_ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": dict(n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320],
                        kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
                        n_blocks_per_stage=[1, 3, 4, 6, 6, 6], n_conv_per_stage_decoder=[1] * 5, **_COMMON),
    "_kw_requires_import": _IMPORTS,
}


def plans_with(arch: dict, patch=(40, 80, 96), name="nnUNetPlans") -> dict:
    return {
        "dataset_name": "Dataset602_Organs",
        "plans_name": name,
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": -300.0, "std": 400.0, "percentile_00_5": -990.0, "percentile_99_5": 300.0}
        },
        "configurations": {
            "3d_fullres": {"data_identifier": f"{name}_3d_fullres", "patch_size": list(patch), "batch_size": 2,
                           "normalization_schemes": ["CTNormalization"], "spacing": [2.5, 0.8, 0.8],
                           "architecture": copy.deepcopy(arch)},
        },
    }


def configuration(plans: dict):
    return PlansManager(plans).get_configuration("3d_fullres")


def test_patch_divisors_are_the_total_stride_and_the_masking_block():
    assert cnn_patch_divisors(PLAIN_ARCH["arch_kwargs"]) == (4, 16, 16)
    assert cnn_patch_divisors(PLAIN_ARCH["arch_kwargs"], 16) == (16, 16, 16)
    assert cnn_patch_divisors(RESENC_ARCH["arch_kwargs"], 16) == (32, 32, 32)
    assert valid_patch_size((40, 80, 96), (16, 16, 16)) == (32, 80, 96)
    assert valid_patch_size((40, 80, 96), (16, 32, 32)) == (32, 64, 96)


def test_pretraining_moves_the_patch_fine_tuning_keeps_it():
    config = configuration(plans_with(PLAIN_ARCH))
    assert SubForeCNNPretrainTrainer.fitted_patch_size((40, 80, 96), config)[0] == (32, 80, 96)
    assert SubForeRandomMaskCNNPretrainTrainer.fitted_patch_size((40, 80, 96), config)[0] == (32, 80, 96)
    # fine-tuning does not mask: nnU-Net's planned patch (divisible by the total stride) stays
    assert SubForeCNNFinetuneTrainer.fitted_patch_size((40, 80, 96), config)[0] == (40, 80, 96)
    resenc = configuration(plans_with(RESENC_ARCH, patch=(112, 160, 128)))
    assert SubForeCNNPretrainTrainer.fitted_patch_size((112, 160, 128), resenc)[0] == (96, 160, 128)


def test_random_mask_ablation_differs_only_in_the_masking():
    a, b = SubForeCNNPretrainTrainer, SubForeRandomMaskCNNPretrainTrainer
    assert b.masking.selection == "random" and a.masking.selection != "random"
    assert b.masking.with_changes(selection=a.masking.selection) == a.masking
    assert (a.optimizer_recipe(), a.backbone) == (b.optimizer_recipe(), b.backbone)


@pytest.mark.parametrize("arch", [PLAIN_ARCH, RESENC_ARCH], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_pretraining_network_is_the_planned_network_with_a_reconstruction_head(arch):
    """Same keys and shapes as what the stock nnUNetTrainer builds from these plans, but the heads."""
    plans = plans_with(arch)
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    pre = SubForeCNNPretrainTrainer.build_network_architecture(manager, config, 1, 4, True)
    stock = nnUNetTrainer.build_network_architecture(manager, config, 1, 4, True)
    assert type(pre) is type(stock) and type(pre).__name__ == arch["network_class_name"].rsplit(".", 1)[1]
    assert not pre.decoder.deep_supervision
    report = compare_state_dicts(stock.state_dict(), pre.state_dict())
    assert report.ok and not report.unused and len(report.loaded) > 50
    assert report.skipped_head and all(".seg_layers." in k for k in report.skipped_head)
    head = pre.state_dict()[report.skipped_head[-1]]
    assert head.shape[0] == 1  # one output per input channel
    assert backbone_of_state_dict(pre.state_dict()) == CNN_BACKBONE


@pytest.mark.parametrize("arch", [PLAIN_ARCH, RESENC_ARCH], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_tiny_preset_keeps_class_normalization_and_data_and_reconstructs_at_32(arch):
    plans = plans_with(arch)
    tiny = derive_tiny_cnn_plans(plans, target_plans="SubForeTinyCNNPlans")
    assert plans == plans_with(arch)  # source untouched
    config = tiny["configurations"]["3d_fullres"]
    kwargs = config["architecture"]["arch_kwargs"]
    assert config["architecture"]["network_class_name"] == arch["network_class_name"]
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"  # the preprocessed data are reused
    assert tiny["foreground_intensity_properties_per_channel"] == plans["foreground_intensity_properties_per_channel"]
    assert config["patch_size"] == [32, 32, 32] and config["batch_size"] == 2 and tiny["plans_name"] == "SubForeTinyCNNPlans"
    assert kwargs["n_stages"] == 3 and kwargs["features_per_stage"] == [16, 32, 64]
    assert len(kwargs["strides"]) == len(kwargs["kernel_sizes"]) == 3 and len(kwargs["n_conv_per_stage_decoder"]) == 2
    manager = PlansManager(tiny)
    net = SubForeCNNPretrainTrainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 3)
    assert sum(p.numel() for p in net.parameters()) < 1_000_000
    assert net(torch.randn(2, 1, 32, 32, 32)).shape == (2, 1, 32, 32, 32)


def test_tiny_preset_refuses_what_it_cannot_build():
    with pytest.raises(UserError, match="multiple of 16"):
        derive_tiny_cnn_plans(plans_with(PLAIN_ARCH), patch_size=(24, 32, 32))
    unetr = plans_with({"network_class_name": "SomethingElse", "arch_kwargs": {}, "_kw_requires_import": []})
    with pytest.raises(UserError, match="PlainConvUNet or ResidualEncoderUNet"):
        derive_tiny_cnn_plans(unetr)


def test_stem_keys_include_the_decoders_reference_to_the_encoder():
    net = build_plans_network(configuration(derive_tiny_cnn_plans(plans_with(PLAIN_ARCH))), 1, 1)
    keys = cnn_stem_keys(net)
    assert "encoder.stages.0.0.convs.0.conv.weight" in keys
    assert any(k.startswith("decoder.encoder.") for k in keys)
    assert all(net.state_dict()[k].shape[1] == 1 for k in keys)


@pytest.mark.parametrize("arch", [PLAIN_ARCH, RESENC_ARCH], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_adapted_checkpoint_gives_the_same_output_on_equal_channels(arch, tmp_path):
    """1-channel pretraining -> 2-channel fine-tuning: stem spread over the channels, the rest unchanged."""
    config = configuration(derive_tiny_cnn_plans(plans_with(arch)))
    torch.manual_seed(0)
    source = build_plans_network(config, 1, 3).eval()
    target = TrainerNetwork(build_plans_network(config, 2, 3).eval(), CNN_BACKBONE, None)
    checkpoint = {"network_weights": source.state_dict(), "trainer_name": "SubForeCNNPretrainTrainer"}
    report = adapt_checkpoint(tmp_path / "src.pth", checkpoint, target, "nnUNetTrainer", tmp_path / "out.pth", {})
    assert set(report.transfer.adapted) == set(target.stem_keys) and len(report.transfer.adapted) >= 1
    assert CNN_PATCH_NOTE in report.describe()
    adapted = torch.load(tmp_path / "out.pth", weights_only=False)["network_weights"]
    heads = {k: v for k, v in source.state_dict().items() if ".seg_layers." in k}
    target.network.load_state_dict({**adapted, **heads})
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target.network(torch.cat([x, x], 1)), source(x), rtol=1e-4, atol=1e-4)


def test_adapt_checkpoint_command_takes_a_cnn_for_the_stock_trainer(tmp_path, capsys):
    plans = derive_tiny_cnn_plans(plans_with(PLAIN_ARCH), target_plans="SubForeTinyCNNPlans")
    plans_file = tmp_path / "SubForeTinyCNNPlans.json"
    plans_file.write_text(json.dumps(plans))
    source = build_trainer_network("SubForeCNNPretrainTrainer", plans_file, "3d_fullres", 1)
    assert source.backbone == CNN_BACKBONE
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": source.network.state_dict()}, ckpt)
    out = tmp_path / "adapted.pth"
    assert main(["adapt-checkpoint", str(ckpt), "--plans", str(plans_file), "-tr", "nnUNetTrainer",
                 "--num-input-channels", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nothing to adapt for a CNN" in printed and "adapted:" in printed
    weights = torch.load(out, weights_only=False)["network_weights"]
    assert weights["encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 3
    # another depth cannot be adapted: a clear refusal, nothing written
    deeper = plans_with(PLAIN_ARCH)
    deeper_file = tmp_path / "nnUNetPlans.json"
    deeper_file.write_text(json.dumps(deeper))
    assert main(["adapt-checkpoint", str(ckpt), "--plans", str(deeper_file), "-tr", "nnUNetTrainer",
                 "--num-input-channels", "1", "-o", str(tmp_path / "no.pth")]) == 2
    assert "same plans" in capsys.readouterr().err and not (tmp_path / "no.pth").exists()


def test_warmup_poly_schedule():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sched = WarmupPolyLRScheduler(opt, 1e-3, max_steps=100, warmup_steps=50)
    lrs = []
    for epoch in range(100):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3 / 51) and lrs[49] == pytest.approx(1e-3 * 50 / 51)
    assert lrs[50] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs[50:], lrs[51:]))
    assert lrs[99] == pytest.approx(1e-3 * (1 / 50) ** 0.9)
    with pytest.raises(ValueError):
        WarmupPolyLRScheduler(opt, 1e-3, max_steps=10, warmup_steps=10)


@pytest.mark.parametrize("trainer, lr, warmup", [(SubForeCNNPretrainTrainer, 1e-2, 0), (SubForeCNNFinetuneTrainer, 1e-3, 50),
                                                 (SubForeCNNFinetuneTrainer_scratch, 1e-2, 0)])
def test_cnn_optimizers_are_sgd_nesterov_with_poly_decay(trainer, lr, warmup):
    net = torch.nn.Linear(2, 2)
    recipe = trainer.optimizer_recipe()
    host = SimpleNamespace(network=net, initial_lr=recipe.lr, weight_decay=recipe.weight_decay, num_epochs=1000,
                           optimizer_recipe=trainer.optimizer_recipe)
    optimizer, scheduler = trainer.configure_optimizers(host)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.99
    assert group["weight_decay"] == 3e-5 and scheduler.initial_lr == lr and scheduler.warmup_steps == warmup
    assert SubForeCNNFinetuneTrainer.deep_supervision


CNN_TRAINERS = ["SubForeCNNPretrainTrainer", "SubForeRandomMaskCNNPretrainTrainer", "SubForeCNNFinetuneTrainer",
                "SubForeCNNFinetuneTrainer_scratch", "SubForeCNNPretrainTrainer_demo",
                "SubForeRandomMaskCNNPretrainTrainer_demo", "SubForeCNNFinetuneTrainer_demo",
                "SubForeCNNTrainer_demo", "SubForeCNNTrainer_demo_scratch", "SubForeCNNPretrainTrainer_demoquick",
                "SubForeCNNTrainer_demoquick", "SubForeCNNTrainer_demoquick_scratch"]


def test_nnunet_finds_the_cnn_trainers(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_subfore.registry import trainer_path

    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_path()))
    for name in CNN_TRAINERS:
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name and issubclass(cls, nnUNetTrainer) and cls.backbone.name == CNN_BACKBONE
