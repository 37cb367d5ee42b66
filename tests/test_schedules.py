import pytest
import torch

from nnunet_subfore.schedules import WarmupCosineLRScheduler


def test_warmup_then_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLRScheduler(opt, 8e-4, max_steps=100, warmup_steps=10)
    lrs = []
    for epoch in range(100):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:10] == sorted(lrs[:10]) and lrs[10] == pytest.approx(8e-4)
    assert lrs[10:] == sorted(lrs[10:], reverse=True) and lrs[-1] < 1e-6


def test_bad_warmup():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLRScheduler(opt, 1e-3, max_steps=10, warmup_steps=10)
