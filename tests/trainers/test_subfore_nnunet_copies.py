"""The nnU-Net methods we re-implement: still matching the source they follow; atomic CPU checkpoints."""

from __future__ import annotations

import hashlib
import inspect
import os
from importlib import metadata

import pytest
import torch

from nnunet_subfore.trainers.subfore_base import archive_problem
from nnunet_subfore.trainers.subfore_nnunet_copies import COPIED_FROM_NNUNET, _to_cpu, write_atomically


@pytest.mark.parametrize("name", sorted(COPIED_FROM_NNUNET))
def test_copied_nnunet_methods_match_the_installed_source(name):
    """Fails when nnU-Net changes a method we re-implemented: look at the change, then update the copy and the hash."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as module

    version, digest = COPIED_FROM_NNUNET[name]
    owner, attribute = name.split(".")
    source = inspect.getsource(getattr(getattr(module, owner), attribute))
    installed = metadata.version("nnunetv2")
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"nnunetv2 {installed}'s {name} differs from the {version} source that trainers/subfore_nnunet_copies.py follows")


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoint_latest.pth"
    write_atomically({"a": torch.ones(3)}, str(target))
    stale = tmp_path / ".checkpoint_latest.pth.99999999.tmp"  # a killed writer's leftover
    stale.write_bytes(b"half")
    write_atomically({"a": torch.zeros(3)}, str(target))
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "checkpoint_best.pth"
    write_atomically({"a": torch.ones(2)}, str(target))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically({"a": Unpicklable()}, str(target))
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_best.pth"]


def test_state_is_moved_to_the_cpu_recursively():
    state = {"w": torch.ones(2, requires_grad=True), "nested": [{"m": torch.zeros(1)}, 3], "step": 5}
    moved = _to_cpu(state)
    assert moved["w"].device.type == "cpu" and not moved["w"].requires_grad
    assert moved["nested"][1] == 3 and moved["step"] == 5


def test_archive_problem_tells_intact_from_cut_checkpoints(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save({"network_weights": {"w": torch.randn(64, 64)}}, whole)
    assert archive_problem(str(whole)) is None
    data = whole.read_bytes()
    for name, content in (("half.pth", data[: len(data) // 2]), ("empty.pth", b"")):
        (tmp_path / name).write_bytes(content)
        assert "not a complete checkpoint" in archive_problem(str(tmp_path / name))
