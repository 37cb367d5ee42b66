"""``nnunet-subfore train``: ``nnUNetv2_train``, and under ``torchrun`` DDP across every process of every node.

nnU-Net 2.8 trains on several GPUs of one machine only (``-num_gpus N`` spawns the processes itself, NCCL,
``cuda:<rank>``). torchrun (and SLURM set-ups built on it) start the processes themselves and describe the group
in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a rendezvous
endpoint). Started alone (``WORLD_SIZE`` unset or 1) this command *is* ``nnUNetv2_train`` (same arguments, same
code path). Started by torchrun with ``WORLD_SIZE`` > 1, each process joins the group (NCCL on CUDA, gloo on
CPU) and runs what nnU-Net's own ``run_ddp`` runs for one rank, with three corrections nnU-Net 2.8 needs beyond
one node and on CPUs:

- the device is ``cuda:LOCAL_RANK`` (nnU-Net's trainer takes ``cuda:<global rank>``, which does not exist on the
  second node), or the CPU for ``-device cpu``;
- the network is wrapped by DDP with ``device_ids=[LOCAL_RANK]`` (nnU-Net passes the global rank), and without
  device ids on the CPU, where DDP refuses them;
- ``-pretrained_weights`` is read onto the CPU and checked as nnU-Net's loader checks it (nnU-Net maps it to
  ``cuda:<global rank>``).

Rank 0 (global) writes checkpoints, logs and pictures, as in nnU-Net; the pretraining trainers draw one mask
stream per global rank (:mod:`nnunet_subfore.rank_masking`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from nnunet_subfore.errors import UserError


def nnunet_train_parser() -> argparse.ArgumentParser:
    """``nnUNetv2_train``'s arguments (nnU-Net 2.8), for the distributed path."""
    p = argparse.ArgumentParser(prog="nnunet-subfore train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_name_or_id")
    p.add_argument("configuration")
    p.add_argument("fold")
    p.add_argument("-tr", default="nnUNetTrainer")
    p.add_argument("-p", default="nnUNetPlans")
    p.add_argument("-pretrained_weights", default=None)
    p.add_argument("-num_gpus", type=int, default=1)
    p.add_argument("--npz", action="store_true")
    p.add_argument("--c", action="store_true")
    p.add_argument("--val", action="store_true")
    p.add_argument("--val_best", action="store_true")
    p.add_argument("--disable_checkpointing", action="store_true")
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu", "mps"])
    return p


def world_size() -> int:
    """The number of processes torchrun started (1 when started alone)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes.") from None


def train(argv: Sequence[str]) -> int:
    """``nnunet-subfore train ARGS``: as ``nnUNetv2_train ARGS``; under torchrun, one rank of a DDP training."""
    if world_size() <= 1:
        from nnunetv2.run.run_training import run_training_entry

        sys.argv = ["nnUNetv2_train", *argv]  # the trainers read -pretrained_weights from there, as under nnUNetv2_train
        run_training_entry()
        return 0
    args = nnunet_train_parser().parse_args(list(argv))
    if args.num_gpus != 1:
        raise UserError(f"-num_gpus {args.num_gpus} under torchrun: torchrun starts the processes (--nproc-per-node); "
                        f"leave -num_gpus out.")
    if args.device == "mps":
        raise UserError("-device mps cannot train in several processes; use cuda or cpu.")
    return _train_rank(args)


def rank_device(device_type: str) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK``, or the CPU."""
    if device_type != "cuda":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("-device cuda, but this process sees no CUDA device; use -device cpu (gloo) or check the node.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {local_rank}, but this node has {torch.cuda.device_count()} CUDA device(s): "
                        f"start at most that many processes per node (torchrun --nproc-per-node).")
    return torch.device("cuda", local_rank)


def _train_rank(args: argparse.Namespace) -> int:
    from torch import distributed as dist

    device = rank_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trainer = _rank_trainer(args, device)
        _load_weights(trainer, args)
        if not args.val:
            trainer.run_training()
        if args.val_best:
            trainer.load_checkpoint(os.path.join(trainer.output_folder, "checkpoint_best.pth"))
        trainer.perform_actual_validation(args.npz)
    finally:
        dist.destroy_process_group()
    return 0


def _rank_trainer(args: argparse.Namespace, device: torch.device):
    """nnU-Net's trainer for this rank, on ``device``, whose ``initialize`` wraps the network for ``device``."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
    from nnunetv2.run.run_training import get_trainer_from_args

    def ddp(module, device_ids=None, **kwargs):  # nnU-Net passes device_ids=[global rank]
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, **kwargs)

    nnunet_trainer_module.DDP = ddp
    fold = args.fold if args.fold == "all" else int(args.fold)
    trainer = get_trainer_from_args(args.dataset_name_or_id, args.configuration, fold, args.tr, args.p, args.c,
                                    device=device)
    trainer.device = device  # nnU-Net's DDP __init__ took cuda:<global rank>
    if device.type != "cuda":
        trainer.grad_scaler = None
        threads = os.environ.get("OMP_NUM_THREADS", "").strip()
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else 1)
    trainer.disable_checkpointing = args.disable_checkpointing
    return trainer


def _load_weights(trainer, args: argparse.Namespace) -> None:
    """What nnU-Net's ``maybe_load_checkpoint`` does for --c, --val and -pretrained_weights, on this rank's device."""
    if args.c and args.pretrained_weights:
        raise UserError("--c and -pretrained_weights together: pretrained weights only start a training.")
    folder = Path(trainer.output_folder)
    if args.c:
        existing = [folder / n for n in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
                    if (folder / n).is_file()]
        if existing:
            trainer.load_checkpoint(str(existing[0]))
        else:
            print("WARNING: nothing to continue from in " + str(folder) + "; starting a new training.")
    elif args.val:
        if not (folder / "checkpoint_final.pth").is_file():
            raise UserError(f"--val: the training in {folder} has not finished (no checkpoint_final.pth).")
        trainer.load_checkpoint(str(folder / "checkpoint_final.pth"))
    elif args.pretrained_weights:
        if not trainer.was_initialized:
            trainer.initialize()
        load_pretrained_weights_on_cpu(trainer.network, Path(args.pretrained_weights))


def load_pretrained_weights_on_cpu(network: torch.nn.Module, path: Path) -> List[str]:
    """nnU-Net's ``load_pretrained_weights`` (every tensor but ``.seg_layers.``, each one required with the
    network's shape), reading the file onto the CPU; returns the keys loaded."""
    from nnunet_subfore.checkpoints import compare_state_dicts, load_checkpoint

    module = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
    module = getattr(module, "_orig_mod", module)
    state = module.state_dict()
    weights = load_checkpoint(path)["network_weights"]
    report = compare_state_dicts(state, weights)
    if not report.ok:
        raise UserError(f"Pretrained weights {path} do not fit the network:\n{report.describe()}")
    state.update({k: weights[k] for k in report.loaded})
    module.load_state_dict(state)
    return list(report.loaded)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return train(sys.argv[1:] if argv is None else argv)
