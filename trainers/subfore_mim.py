"""The MIM pretraining trainer of every backbone: HU-based foreground masking, masked L1, no Dice.

The network (whole encoder + decoder) reconstructs the unmasked patch from a patch whose foreground
subvolumes were partly filled with noise; the loss is the L1 over the masked voxels. No data
augmentation, no deep supervision, the masking of :data:`nnunet_subfore.recipe.PAPER_MASKING` (changed
by the plans' ``subfore_masking``). The backbone's trainers (``subfore_pretrain``: SwinUNETR and UNETR,
``subfore_cnn``: the plans' CNN) set the backbone and nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast
from torch import distributed as dist

from nnunet_subfore.checkpoints import load_checkpoint
from nnunet_subfore.continuation import (
    CONTINUATION_FILE,
    continuation_error_message,
    continuation_record,
    continuation_weights,
)
from nnunet_subfore.crops import center_crop
from nnunet_subfore.data.fingerprint_store import FingerprintStore
from nnunet_subfore.data.fingerprints import (
    CHECKPOINT_KEY,
    PRETRAINING_FINGERPRINTS_FILE,
    dataset_cases,
    fingerprint_cases,
    fingerprint_record,
    raw_dataset_folder,
)
from nnunet_subfore.errors import UserError
from nnunet_subfore.losses import MaskedL1Loss, masked_voxel_count
from nnunet_subfore.masking import ForegroundMasker
from nnunet_subfore.masking_setup import masker_for_plans
from nnunet_subfore.rank_masking import mask_generator, union_mean_scale, union_means
from nnunet_subfore.recipe import PAPER_MASKING, PLANS_MASKING_KEY, recipe_from_plans
from nnunet_subfore.trainers.subfore_base import (
    SubForeTrainerBase,
    no_augmentation_patch_setup,
    pretrained_weights_from_argv,
)
from nnunet_subfore.trainers.subfore_mim_logging import MIMLocalLogger
from nnunet_subfore.trainers.subfore_nnunet_copies import mim_on_epoch_end

#: Checkpoint key of the mask streams' settings (:meth:`SubForeMIMTrainer.mask_streams`).
MASK_STREAMS_KEY = "subfore_mask_streams"
#: Seed of the masks drawn for validation (the same every epoch, so validation losses compare).
VALIDATION_MASK_SEED = 12345


class SubForeMIMTrainer(SubForeTrainerBase):
    """MIM pretraining with HU-based foreground masking, for any backbone (not run directly: a backbone's
    trainer sets :attr:`backbone`).

    Attributes:
        masking: the :class:`nnunet_subfore.recipe.MaskingRecipe` (window and threshold in HU; the
            trainer maps the window into the plans' normalized units). The plans' ``subfore_masking``
            entry (``nnunet-subfore plans --threshold ...``) changes it per run; the instance then holds the
            recipe it runs with.
        random_masking: the ablation baseline: subvolumes drawn at random at the same ratio, foreground or
            not (whatever selection the plans name; no HU check, so any modality).
        mask_seed: the run's seed of the training masks: step ``i`` of rank ``r`` draws its masks (and noise
            fill) from a generator seeded by ``rank_masking.mask_stream_seed(mask_seed, r, i)``, so ranks
            draw different masks, reruns the same ones, and ``--c`` continues the streams (see
            docs/workflow.md, "Multi-GPU pretraining").
    """

    masking = PAPER_MASKING
    random_masking: bool = False
    mask_seed: int = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # before the base class fits the patch to the subvolume size
        self.masking, self.masking_settings = self.recipe_for_plans(plans)
        super().__init__(plans, configuration, fold, dataset_json, device)
        # losses, not pseudo Dice: see subfore_mim_logging
        self.logger.local_logger = MIMLocalLogger()

    @classmethod
    def default_optimizer(cls):
        return cls.backbone.pretraining

    @classmethod
    def output_channels(cls, num_input_channels: int, num_output_channels: int) -> int:
        return num_input_channels  # the output is the reconstructed input, not class logits

    @classmethod
    def recipe_for_plans(cls, plans: dict):
        """The recipe this trainer runs with under ``plans`` (the class's, changed by the plans' ``subfore_masking``)
        and the settings the plans gave."""
        try:
            return recipe_from_plans(plans, cls.masking)
        except (TypeError, ValueError) as e:
            raise SystemExit(f"\n{cls.__name__}: the plans' {PLANS_MASKING_KEY} entry is invalid: {e}. Write it with "
                             f"`nnunet-subfore plans -d DATASET --threshold ...`.") from e

    def masking_log_line(self) -> str:
        """What the log says about the masking settings and where they come from."""
        source = (f"the plans' {PLANS_MASKING_KEY} {self.masking_settings}, the rest {self.__class__.__name__}'s defaults"
                  if self.masking_settings else f"{self.__class__.__name__}'s defaults, no {PLANS_MASKING_KEY} in the plans")
        return f"Masking settings: {self.masking.describe()} (from {source})"

    def initialize(self):
        self.print_to_log_file(self.masking_log_line())
        try:
            self.masker = self.build_masker()
        except (UserError, KeyError) as e:
            self.fail(str(e))
        self.print_to_log_file(f"Masking: {self.masker}")
        super().initialize()
        weights = pretrained_weights_from_argv()
        if weights is not None:
            self.continue_pretraining_from(weights)

    # ----------------------------------------------------------------------------------------------
    # continued pretraining: -pretrained_weights (ours or nnssl's), output heads kept where they fit
    def continue_pretraining_from(self, path: Path) -> None:
        """Load ``path`` into the network before nnU-Net's ``-pretrained_weights`` loader runs: every tensor that
        loader copies plus the reconstruction heads where they fit (it skips those), with the fix in the message
        when the checkpoint does not fit; writes :data:`nnunet_subfore.continuation.CONTINUATION_FILE`."""
        try:
            checkpoint = load_checkpoint(path)
        except UserError as e:
            self.fail(str(e))
        state, report = continuation_weights(self.plain_network.state_dict(), checkpoint["network_weights"])
        if not report.ok:
            self.fail(continuation_error_message(report, path, self.__class__.__name__, self.plans_manager.dataset_name,
                                                 self.plans_manager.plans_name))
        self.plain_network.load_state_dict(state)
        self.continuation = continuation_record(path, checkpoint, report)
        self.print_to_log_file(f"Continued pretraining from {path}:\n{report.describe()}")
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, CONTINUATION_FILE), "w") as f:
                json.dump(self.continuation, f, indent=1)

    def _continuation_of_this_run(self) -> Optional[dict]:
        """The continuation record of this run: set by -pretrained_weights, or read back on --c; a record left by an
        earlier run in the folder of a fresh run without -pretrained_weights is removed (its weights were not loaded)."""
        if getattr(self, "continuation", None) is not None:
            return self.continuation
        path = os.path.join(self.output_folder, CONTINUATION_FILE)
        if not os.path.isfile(path):
            return None
        if self.current_epoch > 0:  # --c: the checkpoint holds the continued weights
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        if self.local_rank == 0:
            os.remove(path)
            self.print_to_log_file(f"Removed {CONTINUATION_FILE} of an earlier run: this run starts from a fresh network.")
        return None

    def build_masker(self) -> ForegroundMasker:
        """The masker in nnU-Net's normalized units, after checking that the plans keep the threshold visible
        (random masking: no criterion, so no check)."""
        recipe = self.masking.with_changes(selection="random") if self.random_masking else self.masking
        plans_name = f"plans {self.plans_manager.plans_name!r} of {self.plans_manager.dataset_name}"
        masker, line = masker_for_plans(self.plans_manager.plans, self.configuration_name, recipe, source=plans_name)
        self.print_to_log_file(line)
        return masker

    def _build_loss(self):
        return MaskedL1Loss()

    # ----------------------------------------------------------------------------------------------
    # leakage guard: the content fingerprint of every pretraining case, in the checkpoints and the fold folder
    def on_train_start(self):
        super().on_train_start()
        self.continuation = self._continuation_of_this_run()
        self.record_pretraining_fingerprints()

    def record_pretraining_fingerprints(self) -> None:
        """Fingerprint every case of the raw dataset (the preprocessed data is resampled, so the raw images are
        read through the dataset's own files) and write them to ``pretraining_fingerprints.json``; the
        checkpoints carry them too, so that fine-tuning trainers can warn about evaluation cases seen here."""
        self.pretraining_fingerprints = None
        if self.local_rank != 0:
            return
        from nnunetv2.paths import nnUNet_raw

        dataset = self.plans_manager.dataset_name
        raw = raw_dataset_folder(nnUNet_raw, dataset)
        if raw is None:
            self.print_to_log_file(
                f"Leakage guard: the raw dataset {dataset} is not in nnUNet_raw ({nnUNet_raw}); no fingerprints of "
                f"the pretraining cases are recorded, so fine-tuning runs cannot check for shared cases.")
            return
        train_keys, val_keys = self.do_split()
        try:
            prints = fingerprint_cases(dataset_cases(raw), store=FingerprintStore())
        except UserError as e:
            self.print_to_log_file(f"Leakage guard: no fingerprints recorded: {e}")
            return
        earlier = (getattr(self, "continuation", None) or {}).get("earlier_fingerprints", [])
        self.pretraining_fingerprints = fingerprint_record(
            prints, dataset, fold=self.fold, trained_on=list(train_keys), validated_on=list(val_keys),
            **({"earlier": earlier} if earlier else {}))
        with open(os.path.join(self.output_folder, PRETRAINING_FINGERPRINTS_FILE), "w") as f:
            json.dump(self.pretraining_fingerprints, f, indent=1)
        self.print_to_log_file(f"Leakage guard: content fingerprints of the {len(prints)} cases of {raw} recorded "
                               f"({PRETRAINING_FINGERPRINTS_FILE} and the checkpoints).")

    def checkpoint_extras(self) -> dict:
        record = getattr(self, "pretraining_fingerprints", None)
        extras = {MASK_STREAMS_KEY: self.mask_streams()}
        return extras if record is None else {CHECKPOINT_KEY: record, **extras}

    def mask_streams(self) -> dict:
        """What decides the training masks: the run's seed and the number of ranks (each draws its own stream)."""
        return {"mask_seed": int(self.mask_seed), "world_size": dist.get_world_size() if self.is_ddp else 1}

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's --c; says so when the run goes on with another number of ranks (other mask streams)."""
        super().load_checkpoint(filename_or_checkpoint)
        if isinstance(filename_or_checkpoint, dict):
            saved = filename_or_checkpoint.get(MASK_STREAMS_KEY)
        else:  # the intact file the base class chose; its tensors mapped, not read a second time
            saved = load_checkpoint(Path(self.loaded_checkpoint_path), mmap=True).get(MASK_STREAMS_KEY)
        if saved and saved != self.mask_streams():
            self.print_to_log_file(f"Note: the checkpoint's masks came from {saved}; this run draws them with "
                                   f"{self.mask_streams()}, so the mask streams do not continue as they were.")

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        return no_augmentation_patch_setup(self)

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        # the paper pretrains without data augmentation
        return nnUNetTrainer.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels,
                                                       regions, ignore_label)

    # ----------------------------------------------------------------------------------------------
    def _masked_loss(self, data: torch.Tensor, generator=None, network: Optional[torch.nn.Module] = None):
        """The masked L1 of ``network`` (default: the training network, DDP-wrapped under DDP) on ``data``."""
        batch = self.masker(data, generator=generator)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            reconstruction = (self.network if network is None else network)(batch.masked)
        loss = self.loss(reconstruction.float(), data.float(), batch.subvolume_mask)
        return loss, batch

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._mask_step = self.current_epoch * self.num_iterations_per_epoch

    def next_mask_generator(self) -> torch.Generator:
        """The generator of this rank's next training step (the global step counts from the epoch's first)."""
        step = getattr(self, "_mask_step", self.current_epoch * self.num_iterations_per_epoch)
        self._mask_step = step + 1
        return mask_generator(self.mask_seed, self.local_rank, step, self.device)

    def _union_loss(self, data: torch.Tensor, generator: torch.Generator):
        """The masked loss; under DDP scaled so that DDP's gradient average (and the mean over the ranks of the
        returned loss) is the mean over the masked voxels of all ranks (``rank_masking.union_mean_scale``)."""
        loss, batch = self._masked_loss(data, generator=generator)
        if self.is_ddp:
            loss = loss * union_mean_scale(masked_voxel_count(data, batch.subvolume_mask)).to(loss.dtype)
        return loss, batch

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self._union_loss(data, self.next_mask_generator())
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._val_generator = torch.Generator(device=self.device).manual_seed(VALIDATION_MASK_SEED + self.local_rank)

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        loss, masked = self._masked_loss(data, generator=self._val_generator)
        return {"loss": loss.cpu().numpy(), "masked_fraction": masked.masked_fraction.cpu().numpy(),
                "masked_voxels": masked_voxel_count(data, masked.subvolume_mask).cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        """The validation loss: per step the mean over the masked voxels of all ranks, averaged over the steps
        (alone: the mean of the steps' losses)."""
        outputs = collate_outputs(val_outputs)
        losses, counts = np.ravel(outputs["loss"]), np.ravel(outputs["masked_voxels"])  # (steps,)
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (losses, counts))
            losses, counts = np.stack([g[0] for g in gathered]), np.stack([g[1] for g in gathered])
        per_step = union_means(np.atleast_2d(losses), np.atleast_2d(counts))
        self.logger.log("val_losses", float(np.mean(per_step)), self.current_epoch)

    def _epoch_end(self) -> None:
        mim_on_epoch_end(self)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def perform_actual_validation(self, save_probabilities: bool = False):
        """Reconstruction metrics on the fold's validation cases (nothing is segmented).

        One centred patch per case (padded like nnU-Net pads), masked with a fixed seed; writes
        ``validation/reconstruction_metrics.json``. Rank 0 alone, on the unwrapped network (a DDP forward
        on one rank could wait for the others to sync buffers).
        """
        if self.local_rank != 0:
            return
        self.network.eval()
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        generator = torch.Generator(device=self.device).manual_seed(VALIDATION_MASK_SEED)
        patch = [int(p) for p in self.configuration_manager.patch_size]
        per_case = {}
        for key in val_keys:
            data = np.asarray(dataset.load_case(key)[0])
            x = torch.from_numpy(center_crop(data, patch)[0])[None].to(self.device)
            loss, masked = self._masked_loss(x, generator=generator, network=self.plain_network)
            per_case[key] = {
                "masked_l1": float(loss),
                "masked_fraction": float(masked.masked_fraction),
                "foreground_fraction": self._foreground_fraction(masked),
            }
        masked_cases = [v["masked_l1"] for v in per_case.values() if v["masked_fraction"] > 0]
        summary = {
            "trainer": self.__class__.__name__,
            "masking": repr(self.masker),
            "patch_size": patch,
            "mean_masked_l1": float(np.mean(masked_cases)) if masked_cases else None,
            "cases_without_masked_voxels": [k for k, v in per_case.items() if v["masked_fraction"] == 0],
            "per_case": per_case,
        }
        out_dir = os.path.join(self.output_folder, "validation")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "reconstruction_metrics.json"), "w") as f:
            json.dump(summary, f, indent=2)
        self.print_to_log_file(
            f"Reconstruction on {len(val_keys)} validation cases: mean masked L1 {summary['mean_masked_l1']}"
        )

    def _foreground_fraction(self, masked) -> Optional[float]:
        """Share of the patch's subvolumes that pass the HU criterion (reported per validation case); None for
        random masking, which never evaluates the criterion."""
        return None if self.random_masking else float(masked.foreground.float().mean())
