"""The backbone objects: optimizer recipes, patch rules, the registry."""

import pytest
import torch

from nnunet_subfore.backbones import (
    BACKBONES,
    PLANS_CNN,
    SWINUNETR,
    UNETR,
    OptimizerRecipe,
    get_backbone,
    trainers_for_backbones,
)
from nnunet_subfore.schedules import WarmupCosineLRScheduler, WarmupPolyLRScheduler


def test_registry_names_every_backbone():
    assert set(BACKBONES) == {"swinunetr", "unetr", "cnn"}
    assert get_backbone("unetr") is UNETR
    with pytest.raises(ValueError, match="'vnet'.*known"):
        get_backbone("vnet")
    assert trainers_for_backbones("_demo")["cnn"] == ("SubForeCNNFinetuneTrainer_demo", "SubForeCNNPretrainTrainer_demo")


@pytest.mark.parametrize("bad, match", [(dict(optimizer="adam"), "optimizer"), (dict(schedule="step"), "schedule"),
                                        (dict(lr=0), "lr"), (dict(warmup_epochs=-1), "warmup_epochs"),
                                        (dict(warmup_fraction=1.0), "warmup_fraction")])
def test_optimizer_recipe_names_the_bad_value(bad, match):
    args = dict(optimizer="sgd", lr=1e-2, weight_decay=3e-5, schedule="poly")
    with pytest.raises(ValueError, match=match):
        OptimizerRecipe(**{**args, **bad})


def test_optimizer_recipes_build_what_they_say():
    net = torch.nn.Linear(2, 2)
    optimizer, scheduler = SWINUNETR.pretraining.build(net.parameters(), num_epochs=100)
    assert isinstance(optimizer, torch.optim.AdamW) and isinstance(scheduler, WarmupCosineLRScheduler)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and scheduler.warmup_steps == 5
    optimizer, scheduler = PLANS_CNN.finetuning.build(net.parameters(), num_epochs=20)
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(scheduler, WarmupPolyLRScheduler)
    assert optimizer.param_groups[0]["nesterov"] and scheduler.warmup_steps == 19  # 50 capped at num_epochs - 1
    # None keeps a field; an explicit warm-up in epochs wins over the fraction
    recipe = UNETR.finetuning.with_changes(lr=None, warmup_epochs=2)
    assert recipe.lr == 3e-4 and recipe.warmup(1000) == 2


def test_monai_patch_rule_and_forced_patch():
    assert SWINUNETR.fit_patch((96, 96, 96))[0] == (96, 96, 96)
    assert SWINUNETR.fit_patch((96, 96, 96), subvolume_size=64)[0] == (64, 64, 64)
    assert UNETR.fit_patch((40, 80, 96))[0] == (32, 80, 96)
    assert UNETR.fit_patch((40, 80, 96), forced=(32, 64, 64))[0] == (32, 64, 64)
    with pytest.raises(ValueError, match="multiple of"):
        UNETR.fit_patch((40, 80, 96), forced=(40, 64, 64))
    with pytest.raises(ValueError, match="3D configuration"):
        SWINUNETR.fit_patch((160, 192))
    with pytest.raises(ValueError, match="instance normalization"):
        SWINUNETR.fit_patch((32, 32, 32))


def test_backbones_name_their_encoder():
    from nnunet_subfore.networks import TINY_ARCHITECTURES, build_network

    net = build_network("unetr", (32, 32, 32), 1, 2, TINY_ARCHITECTURES["unetr"])
    assert UNETR.encoder_prefixes(net) == ("backbone.vit.",)
    assert all(k.startswith("backbone.vit.") for k in net.state_dict() if k.startswith(UNETR.encoder_prefixes(net)))
