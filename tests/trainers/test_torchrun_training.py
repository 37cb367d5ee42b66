"""`nnunet-subfore train` (issue 19, item 4): alone it is nnUNetv2_train; under `torchrun --standalone
--nproc-per-node 2 ... -device cpu` the two processes train one CNN pretraining run with DDP on gloo, rank 0
writes one checkpoint_final.pth, and the checkpoint records the mask streams' seed and world size.

Slow: they reuse the CNN demo run's pretraining set (fixture ``cnn_demo_run``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from subfore_test_helpers import result_folder, run

from nnunet_subfore.demo import CHAINS, PRETRAIN_ID, PRETRAIN_NAME
from nnunet_subfore.paths import dataset_folder_name
from nnunet_subfore.trainers.subfore_mim import MASK_STREAMS_KEY

pytestmark = pytest.mark.slow

CHAIN = CHAINS["cnn"].for_quick()
PRETRAIN = dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
TRAINER = "SubForeCNNPretrainTrainer_twoiters"  # tests/ext_trainers: the demo's CNN pretraining, 2 iterations


def _script(name: str) -> str:
    """A console script of this environment (next to the interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def test_torchrun_trains_one_run_on_two_cpu_processes(cnn_demo_run):
    _, env, _ = cnn_demo_run
    env = {**env, "OMP_NUM_THREADS": "1"}
    done = run([_script("torchrun"), "--standalone", "--nproc-per-node", "2", _script("nnunet-subfore"), "train",
                str(PRETRAIN_ID), "3d_fullres", "0", "-tr", TRAINER, "-p", CHAIN.pretrain_plans, "-device", "cpu"],
               env, training=True)
    fold = result_folder(env, PRETRAIN, TRAINER, CHAIN.pretrain_plans) / "fold_0"
    assert sorted(p.name for p in fold.glob("checkpoint_final*")) == ["checkpoint_final.pth"]
    assert len(list(fold.glob("training_log_*.txt"))) == 1  # one writer
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert checkpoint[MASK_STREAMS_KEY] == {"mask_seed": 0, "world_size": 2}
    assert (done.stdout + done.stderr).count("The world size is 2") == 2  # both processes joined one group


def test_train_alone_is_nnunetv2_train(cnn_demo_run):
    _, env, _ = cnn_demo_run
    run(["nnunet-subfore", "train", str(PRETRAIN_ID), "3d_fullres", "1", "-tr", TRAINER, "-p", CHAIN.pretrain_plans,
         "-device", "cpu"], env, training=True)
    fold = result_folder(env, PRETRAIN, TRAINER, CHAIN.pretrain_plans) / "fold_1"
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert checkpoint[MASK_STREAMS_KEY] == {"mask_seed": 0, "world_size": 1}
