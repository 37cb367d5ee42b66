import pytest
import torch

from nnunet_subfore.networks import (
    TINY_ARCHITECTURES,
    backbone_of_state_dict,
    build_network,
    check_patch_size,
    patch_divisor,
    valid_patch_size,
)


@pytest.mark.parametrize("backbone", ["swinunetr", "unetr"])
def test_pretraining_and_finetuning_networks_share_all_keys_but_the_head(backbone):
    arch = TINY_ARCHITECTURES[backbone]
    pre = build_network(backbone, (32, 32, 32), 1, 1, arch).state_dict()
    fine = build_network(backbone, (32, 32, 32), 1, 5, arch).state_dict()
    assert pre.keys() == fine.keys()
    differing = {k for k in pre if pre[k].shape != fine[k].shape}
    head = {k for k in pre if ".seg_layers." in k}
    assert head and differing <= head
    assert backbone_of_state_dict(pre) == backbone


@pytest.mark.parametrize("backbone", ["swinunetr", "unetr"])
def test_forward_shape(backbone):
    net = build_network(backbone, (32, 32, 64), 2, 3, TINY_ARCHITECTURES[backbone])
    assert net(torch.randn(2, 2, 32, 32, 64)).shape == (2, 3, 32, 32, 64)


def test_paper_architectures_build():
    swin = build_network("swinunetr", (64, 64, 64), 1, 14)
    unetr = build_network("unetr", (96, 96, 96), 1, 14)
    assert swin.backbone.swinViT.patch_embed.proj.out_channels == 48
    assert unetr.backbone.vit.patch_embedding.position_embeddings.shape == (1, 216, 768)


def test_patch_rules():
    assert valid_patch_size((40, 80, 96), 32) == (32, 64, 96)
    assert valid_patch_size((40, 80, 96), 16) == (32, 80, 96)
    assert valid_patch_size((20, 160, 160), 32) == (32, 160, 160)
    assert patch_divisor("unetr", 16) == 16 and patch_divisor("swinunetr", 16) == 32
    with pytest.raises(ValueError, match=r"\(40, 80, 96\).*32"):
        check_patch_size("swinunetr", (40, 80, 96))
    with pytest.raises(ValueError, match="single voxel"):
        check_patch_size("swinunetr", (32, 32, 32))
    assert check_patch_size("swinunetr", (32, 32, 32), TINY_ARCHITECTURES["swinunetr"]) == (32, 32, 32)
    with pytest.raises(ValueError, match="3D"):
        valid_patch_size((64, 64), 16)
    with pytest.raises(ValueError, match="backbone"):
        build_network("resenc", (64, 64, 64), 1, 1)
