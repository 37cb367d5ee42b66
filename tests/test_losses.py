import torch

from nnunet_subfore.losses import MaskedL1Loss, masked_l1_loss


def test_loss_ignores_unmasked_voxels():
    target = torch.zeros(2, 1, 8, 8, 8)
    pred = torch.zeros_like(target)
    mask = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    pred[:, :, 4:] = 100.0  # large errors outside the mask: ignored
    pred[:, :, :4] = 2.0
    assert masked_l1_loss(pred, target, mask).item() == 2.0


def test_loss_is_mean_over_masked_voxels_and_channels():
    target = torch.zeros(1, 2, 4, 4, 4)
    pred = torch.zeros_like(target)
    pred[:, 0] = 1.0
    pred[:, 1] = 3.0
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., 0, 0, 0] = True
    assert masked_l1_loss(pred, target, mask).item() == 2.0


def test_no_masked_voxel_gives_zero_and_backward_works():
    pred = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    loss = MaskedL1Loss()(pred, torch.zeros_like(pred), torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None and (pred.grad == 0).all()


def test_gradient_only_reaches_masked_voxels():
    pred = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2, :, :] = True
    masked_l1_loss(pred, torch.zeros_like(pred), mask).backward()
    assert (pred.grad[..., 2:, :, :] == 0).all() and (pred.grad[..., :2, :, :] != 0).all()
