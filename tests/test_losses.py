import pytest
import torch

from nnunet_subfore.losses import MaskedL1Loss, masked_l1_loss, subvolume_masked_l1_loss
from nnunet_subfore.masking import expand_subvolume_mask


def test_loss_ignores_unmasked_voxels():
    target = torch.zeros(2, 1, 8, 8, 8)
    pred = torch.zeros_like(target)
    mask = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    pred[:, :, 4:] = 100.0  # large errors outside the mask: ignored
    pred[:, :, :4] = 2.0
    assert masked_l1_loss(pred, target, mask).item() == 2.0
    sub = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    sub[:, 0] = True  # the same voxels as subvolumes of 4^3
    assert subvolume_masked_l1_loss(pred, target, sub).item() == 2.0


def test_loss_is_mean_over_masked_voxels_and_channels():
    target = torch.zeros(1, 2, 4, 4, 4)
    pred = torch.zeros_like(target)
    pred[:, 0] = 1.0
    pred[:, 1] = 3.0
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., 0, 0, 0] = True
    assert masked_l1_loss(pred, target, mask).item() == 2.0
    sub = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    sub[0, 0, 0, 0] = True
    assert subvolume_masked_l1_loss(pred, target, sub).item() == 2.0


def test_no_masked_voxel_gives_zero_and_backward_works():
    pred = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    loss = MaskedL1Loss()(pred, torch.zeros_like(pred), torch.zeros(1, 2, 2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None and (pred.grad == 0).all()


def test_gradient_only_reaches_masked_voxels():
    pred = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2, :, :] = True
    masked_l1_loss(pred, torch.zeros_like(pred), mask).backward()
    assert (pred.grad[..., 2:, :, :] == 0).all() and (pred.grad[..., :2, :, :] != 0).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_subvolume_loss_equals_voxel_mask_loss_in_value_and_gradient(channels):
    gen = torch.Generator().manual_seed(3)
    pred = torch.randn(2, channels, 8, 12, 16, generator=gen)
    target = torch.randn(pred.shape, generator=gen)
    sub = torch.rand(2, 2, 3, 4, generator=gen) < 0.5  # subvolumes of 4^3
    a, b = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    la = masked_l1_loss(a, target, expand_subvolume_mask(sub, 4))
    lb = subvolume_masked_l1_loss(b, target, sub)
    la.backward()
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), rel=1e-6)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=0) and (b.grad != 0).sum() > 0


def test_subvolume_loss_passes_gradcheck():
    gen = torch.Generator().manual_seed(4)
    pred = torch.randn(1, 2, 4, 4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(pred.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    sub = torch.tensor([[[[True, False]]]])  # one masked subvolume of 4x4x4 out of two
    assert torch.autograd.gradcheck(lambda p, t: subvolume_masked_l1_loss(p, t, sub), (pred, target))


def test_subvolume_loss_rejects_a_mask_that_does_not_tile_the_prediction():
    pred = torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"subvolume_mask of shape \(1, 3, 2, 2\)"):
        subvolume_masked_l1_loss(pred, pred, torch.zeros(1, 3, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        subvolume_masked_l1_loss(pred, pred, torch.zeros(1, 2, 2, 2))
