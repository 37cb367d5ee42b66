"""Continued pretraining (issue 20, item 3): which tensors a pretraining run takes from a checkpoint, the message
when it cannot, and the fingerprints of every earlier pretraining set carried on to the leakage guard.

End to end through nnUNetv2_train: tests/trainers/test_continued_pretraining.py.
"""

from __future__ import annotations

import pytest
import torch

from subfore_test_helpers import RESENC, TINY_RESENC_KWARGS, build

from nnunet_subfore.continuation import (
    continuation_error_message,
    continuation_record,
    continuation_weights,
    earlier_fingerprints,
)
from nnunet_subfore.data.fingerprints import (
    CHECKPOINT_KEY,
    FINGERPRINT_SCHEME,
    find_shared,
    fingerprint_record,
    record_fingerprints,
)
from nnunet_subfore.errors import UserError


@pytest.fixture(scope="module")
def pretrained():
    """A tiny ResEnc MAE network (outputs = inputs = 1 channel), as nnssl's and our pretraining write it."""
    return build(RESENC, TINY_RESENC_KWARGS, 1, 1, seed=3).state_dict()


def test_every_tensor_comes_from_the_checkpoint_heads_included(pretrained):
    fresh = build(RESENC, TINY_RESENC_KWARGS, 1, 1, seed=7).state_dict()
    state, report = continuation_weights(fresh, pretrained)
    assert report.ok and not report.skipped_head and not report.unused
    assert any(".seg_layers." in k for k in report.loaded)  # nnU-Net's loader would have left these fresh
    for key, value in pretrained.items():
        assert torch.equal(state[key], value), key


def test_heads_of_another_shape_stay_the_networks_own(pretrained):
    """Two input channels: the heads reconstruct two channels, the checkpoint's one; the stem does not fit either."""
    fresh = build(RESENC, TINY_RESENC_KWARGS, 2, 2, seed=7).state_dict()
    state, report = continuation_weights(fresh, pretrained)
    assert report.skipped_head and all(".seg_layers." in k for k in report.skipped_head)
    for key in report.skipped_head:
        assert torch.equal(state[key], fresh[key])
    assert not report.ok and any(k.startswith("encoder.stem") for k, _, _ in report.mismatched)


def test_the_message_names_the_plans_command_and_the_mismatch(pretrained, tmp_path):
    other = dict(TINY_RESENC_KWARGS, features_per_stage=[8, 16, 32])
    _, report = continuation_weights(build(RESENC, other, 1, 1).state_dict(), pretrained)
    message = continuation_error_message(report, tmp_path / "nnssl.pth", "SubForeCNNPretrainTrainer", "Dataset601_CT",
                                         "nnUNetPlans")
    assert "SHAPE MISMATCH" in message and "nnUNetPlans" in message
    assert f"nnunet-subfore plans -d Dataset601_CT --from-checkpoint {tmp_path / 'nnssl.pth'}" in message
    assert "-pretrained_weights" in message and "adapt-checkpoint" in message


def _record(dataset, cases, **extra):
    return fingerprint_record({case: [f"print-{case}"] for case in cases}, dataset, **extra)


def test_the_fingerprints_of_every_earlier_set_travel_on():
    """A run continued from a checkpoint that itself continued: the guard sees the three sets."""
    first = _record("Dataset700_A", ["a1"])
    second = _record("Dataset701_B", ["b1"], earlier=earlier_fingerprints({CHECKPOINT_KEY: first}))
    earlier = earlier_fingerprints({CHECKPOINT_KEY: second})
    assert [r["dataset"] for r in earlier] == ["Dataset701_B", "Dataset700_A"]  # flat: no record nests another
    third = _record("Dataset702_C", ["c1"], earlier=earlier)
    assert record_fingerprints(third) == {"c1": ["print-c1"], "Dataset701_B/b1": ["print-b1"],
                                          "Dataset700_A/a1": ["print-a1"]}
    report = find_shared(record_fingerprints(third), {"validation": {"case_7": ["print-a1"]}}, "Dataset702_C")
    assert report.shared[0].seen_as == ["Dataset700_A/a1"]


def test_an_earlier_record_of_another_scheme_is_refused():
    record = _record("Dataset702_C", ["c1"], earlier=[{"scheme": "old", "dataset": "X", "cases": {}}])
    with pytest.raises(UserError, match="scheme 'old'"):
        record_fingerprints(record)
    assert record["scheme"] == FINGERPRINT_SCHEME


def test_the_record_says_what_was_loaded_and_where_the_weights_come_from(pretrained, tmp_path):
    fresh = build(RESENC, TINY_RESENC_KWARGS, 1, 1, seed=7).state_dict()
    _, report = continuation_weights(fresh, pretrained)
    checkpoint = {"network_weights": pretrained,
                  "nnssl_adaptation_plan": {"pretrain_plan": {"dataset_name": "Dataset745_OpenMind"}}}
    record = continuation_record(tmp_path / "c.pth", checkpoint, report)
    assert record["loaded"] == len(pretrained) and record["output_heads_loaded"] and not record["output_heads_fresh"]
    assert record["pretrained_on"] == "Dataset745_OpenMind" and record["earlier_fingerprints"] == []
