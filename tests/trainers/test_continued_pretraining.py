"""Continued pretraining through nnUNetv2_train -pretrained_weights (issue 20, item 3): from an nnssl-format
ResEnc checkpoint on plans written by `plans --from-checkpoint`, and from our own CNN checkpoint; a checkpoint that
does not fit the plans is refused with the fix. The weights at the first optimizer step are compared tensor by
tensor with the checkpoint's, output heads included (nnU-Net's own loader leaves those fresh).

Slow: they reuse the CNN demo run's pretraining set (fixture ``cnn_demo_run``).
"""

from __future__ import annotations

import json

import pytest
import torch

from subfore_test_helpers import RESENC, TINY_RESENC_KWARGS, build, nnssl_checkpoint, result_folder, run

from nnunet_subfore.continuation import CONTINUATION_FILE
from nnunet_subfore.data.fingerprints import CHECKPOINT_KEY
from nnunet_subfore.demo import CHAINS, PRETRAIN_ID, PRETRAIN_NAME
from nnunet_subfore.paths import dataset_folder_name

pytestmark = pytest.mark.slow

CHAIN = CHAINS["cnn"].for_quick()
PRETRAIN = dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
FIRST_STEP = "SubForeCNNPretrainTrainer_firststep"  # tests/ext_trainers: 2 iterations, saves the first step's weights


def _continue(env, plans, fold, checkpoint, check=True):
    return run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", str(fold), "-tr", FIRST_STEP, "-p", plans,
                "-pretrained_weights", str(checkpoint), "-device", "cpu"], env, training=True, check=check)


def _assert_started_from(fold_dir, weights):
    first = torch.load(fold_dir / "weights_at_first_step.pth", weights_only=True)
    assert set(first) == set(weights)
    for key, value in weights.items():
        assert torch.equal(first[key], value), key
    final = torch.load(fold_dir / "checkpoint_final.pth", weights_only=True)["network_weights"]
    assert any(not torch.equal(final[k], v) for k, v in weights.items() if v.is_floating_point())  # and it trained


@pytest.fixture(scope="module")
def nnssl_run(cnn_demo_run, tmp_path_factory):
    """An nnssl-format tiny ResEnc checkpoint (2 mm pretraining spacing), the pretraining set planned for it
    (`plans --from-checkpoint`) and preprocessed: (env, checkpoint path, its network)."""
    _, env, _ = cnn_demo_run
    network = build(RESENC, TINY_RESENC_KWARGS, 1, 1, seed=3)
    path = nnssl_checkpoint(tmp_path_factory.mktemp("nnssl") / "nnssl.pth", network, arch_kwargs=TINY_RESENC_KWARGS,
                            spacing=(2.0, 2.0, 2.0))
    run(["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--from-checkpoint", str(path), "--plans-name",
         "ContinueNNSSL"], env)
    run(["nnUNetv2_preprocess", "-d", str(PRETRAIN_ID), "-plans_name", "ContinueNNSSL", "-c", "3d_fullres", "-np", "1"],
        env)
    return env, path, network


def test_pretraining_continues_from_an_nnssl_checkpoint(nnssl_run):
    env, path, network = nnssl_run
    _continue(env, "ContinueNNSSL", 0, path)
    fold = result_folder(env, PRETRAIN, FIRST_STEP, "ContinueNNSSL") / "fold_0"
    _assert_started_from(fold, network.state_dict())
    record = json.loads((fold / CONTINUATION_FILE).read_text())
    assert record["loaded"] == len(network.state_dict()) and record["output_heads_loaded"]
    assert record["pretrained_on"] == "Dataset745_OpenMind" and record["earlier_fingerprints"] == []
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert f"Continued pretraining from {path}" in log and "carried over" in log


def test_pretraining_continues_from_our_checkpoint_and_keeps_its_fingerprints(cnn_demo_run, cnn_checkpoint):
    """The continued checkpoint's leakage record lists the earlier run's cases too."""
    _, env, _ = cnn_demo_run
    _continue(env, CHAIN.pretrain_plans, 1, cnn_checkpoint)
    fold = result_folder(env, PRETRAIN, FIRST_STEP, CHAIN.pretrain_plans) / "fold_1"
    earlier = torch.load(cnn_checkpoint, weights_only=True)
    _assert_started_from(fold, earlier["network_weights"])
    record = torch.load(fold / "checkpoint_final.pth", weights_only=True)[CHECKPOINT_KEY]
    assert record["fold"] == 1 and record["earlier"][0]["cases"] == earlier[CHECKPOINT_KEY]["cases"]
    assert record["earlier"][0]["fold"] == earlier[CHECKPOINT_KEY]["fold"]


def test_a_checkpoint_of_another_network_is_refused_with_the_plans_command(nnssl_run):
    env, path, _ = nnssl_run
    done = _continue(env, CHAIN.pretrain_plans, 2, path, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--from-checkpoint" in done.stderr and "MISSING" in done.stderr
