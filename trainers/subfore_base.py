"""What all SubFore trainers share: a backbone object that builds the network from the plans and fits the
patch to it, the backbone's optimizer recipe, CPU-loadable checkpoints written atomically.

nnU-Net imports the modules of this folder as top-level modules (``nnUNet_extTrainer``), so they
import each other and the library by absolute ``nnunet_subfore...`` names only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_subfore.backbones import SWINUNETR, Backbone, OptimizerRecipe
from nnunet_subfore.errors import UserError
from nnunet_subfore.recipe import MaskingRecipe
from nnunet_subfore.trainers.subfore_nnunet_copies import save_checkpoint_atomically


class SubForeTrainerBase(nnUNetTrainer):
    """Base of the SubFore trainers (not meant to be run directly).

    Subclasses set the class attributes; like nnU-Net's own variants they change attributes, not code.

    Attributes:
        backbone: the :class:`nnunet_subfore.backbones.Backbone` (``SWINUNETR``, ``UNETR``, ``PLANS_CNN``): it
            builds the network, fits the patch and gives the default optimizer.
        architecture: MONAI constructor arguments (None: the paper's, see ``networks.PAPER_ARCHITECTURES``;
            unused by the CNN, whose plans say it). Pretraining and fine-tuning trainers must use the same.
        patch_size: force this patch (written into the saved plans); None: the planned patch, moved to
            the nearest size the backbone accepts.
        masking: the masking recipe of MIM trainers (its subvolume size must also divide the patch); None
            for fine-tuning.
        deep_supervision: nnU-Net's deep supervision (only the CNN fine-tuning trainers use it).
        base_lr, base_weight_decay, warmup_epochs, warmup_fraction, momentum: override the backbone's
            optimizer recipe (:meth:`optimizer_recipe`); None keeps the backbone's value.
        epochs, iterations_per_epoch, val_iterations_per_epoch: override nnU-Net's 1000 / 250 / 50.
        checkpoint_minutes: write ``checkpoint_latest.pth`` at least this often (besides every
            ``save_every`` epochs, which is nnU-Net's 50 or a tenth of the epochs, whichever is smaller).
        trainer_name_suffix: appended to the trainer names that messages suggest (a variant family such
            as the ``_demo`` trainers names its own).
    """

    backbone: Backbone = SWINUNETR
    architecture: Optional[dict] = None
    patch_size: Optional[Tuple[int, int, int]] = None
    masking: Optional[MaskingRecipe] = None
    deep_supervision: bool = False
    base_lr: Optional[float] = None
    base_weight_decay: Optional[float] = None
    warmup_epochs: Optional[int] = None
    warmup_fraction: Optional[float] = None
    momentum: Optional[float] = None
    epochs: Optional[int] = None
    iterations_per_epoch: Optional[int] = None
    val_iterations_per_epoch: Optional[int] = None
    checkpoint_minutes: float = 30.0
    trainer_name_suffix: str = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        recipe = self.optimizer_recipe()
        self.initial_lr = recipe.lr
        self.weight_decay = recipe.weight_decay
        self.enable_deep_supervision = self.deep_supervision
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.iterations_per_epoch
        if self.val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        # a kill loses at most a tenth of the run, or checkpoint_minutes (see on_epoch_end)
        self.save_every = max(1, min(self.save_every, self.num_epochs // 10))
        self._last_latest_checkpoint = time.monotonic()
        try:
            self._fit_patch_size()
        except UserError as e:
            self.fail(str(e))
        self._respect_omp_num_threads()

    # ----------------------------------------------------------------------------------------------
    # optimizer: the backbone's recipe for this trainer's role, changed by the class attributes
    @classmethod
    def default_optimizer(cls) -> OptimizerRecipe:
        """The backbone's recipe for this kind of trainer (fine-tuning here; pretraining in MIM trainers)."""
        return cls.backbone.finetuning

    @classmethod
    def optimizer_recipe(cls) -> OptimizerRecipe:
        """The optimizer recipe this trainer runs with: :meth:`default_optimizer` with the class's overrides."""
        return cls.default_optimizer().with_changes(
            lr=cls.base_lr, weight_decay=cls.base_weight_decay, warmup_epochs=cls.warmup_epochs,
            warmup_fraction=cls.warmup_fraction, momentum=cls.momentum)

    def configure_optimizers(self):
        recipe = self.optimizer_recipe().with_changes(lr=self.initial_lr, weight_decay=self.weight_decay)
        return recipe.build(self.network.parameters(), self.num_epochs)

    @classmethod
    def trainers_for_backbone(cls) -> dict:
        """backbone name -> (fine-tuning, pretraining) trainer names that messages suggest (this family's)."""
        from nnunet_subfore.backbones import trainers_for_backbones

        return trainers_for_backbones(cls.trainer_name_suffix)

    def _respect_omp_num_threads(self) -> None:
        """``nnUNetv2_train -device cpu`` sets torch's threads to every core; honour an explicit OMP_NUM_THREADS.

        Without this, two CPU trainings on one machine each spin one thread per core and run many
        times slower than one after the other (measured: ~20x per epoch on 2 cores).
        """
        value = os.environ.get("OMP_NUM_THREADS", "")
        if self.device.type != "cpu" or not value.strip():
            return
        try:
            threads = int(value)
        except ValueError:
            self.print_to_log_file(f"Ignoring OMP_NUM_THREADS={value!r} (not an integer).")
            return
        if threads > 0 and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.print_to_log_file(f"CPU threads: {threads} (OMP_NUM_THREADS)")

    # ----------------------------------------------------------------------------------------------
    # patch size: the backbone's rules, written into the plans that plans.json saves
    @classmethod
    def fitted_patch_size(cls, planned: Sequence[int], configuration_manager: Optional[ConfigurationManager] = None,
                          masking: Optional[MaskingRecipe] = None) -> Tuple[Tuple[int, int, int], str]:
        """The patch this trainer trains on, given the planned one (and the masking recipe it runs with, default
        :attr:`masking`), and why it differs (if it does).

        ``configuration_manager``: the plans' configuration (the MONAI backbones do not need it; a CNN's
        divisor is its planned total stride).

        Raises:
            UserError: no valid patch (e.g. a 2D configuration, or an invalid forced ``patch_size``).
        """
        planned = tuple(int(p) for p in planned)
        masking = masking if masking is not None else cls.masking
        try:
            patch, reason = cls.backbone.fit_patch(planned, configuration_manager,
                                                   masking.subvolume_size if masking else None, cls.patch_size,
                                                   cls.architecture)
        except ValueError as e:
            raise UserError(
                f"No valid patch for {cls.__name__} from the planned {planned}: {e}. Set a valid patch "
                f"with `nnunet-subfore plans -d DATASET --patch D H W` and train with -p SubForePlans."
            ) from e
        return patch, (f"{cls.__name__}.patch_size" if cls.patch_size is not None else reason)

    def _fit_patch_size(self) -> None:
        planned = tuple(int(p) for p in self.configuration_manager.patch_size)
        patch, reason = self.fitted_patch_size(planned, self.configuration_manager, masking=self.masking)
        if patch != planned:
            self.print_to_log_file(
                f"Patch size moved from the planned {list(planned)} to {list(patch)} ({reason}); "
                f"written into the plans saved as plans.json so inference rebuilds the same network."
            )
            self.plans_manager.plans["configurations"][self.configuration_name]["patch_size"] = list(patch)
            self.configuration_manager.configuration["patch_size"] = list(patch)

    # ----------------------------------------------------------------------------------------------
    # network: rebuilt from the plans alone at inference (nnUNetv2_predict calls this on the class)
    @classmethod
    def output_channels(cls, num_input_channels: int, num_output_channels: int) -> int:
        """The network's output channels (the classes here; the input channels for MIM reconstruction)."""
        return num_output_channels

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        return cls.backbone.build(configuration_manager, num_input_channels,
                                  cls.output_channels(num_input_channels, num_output_channels), cls.architecture,
                                  bool(enable_deep_supervision and cls.deep_supervision))

    def initialize(self):
        try:
            super().initialize()
        except UserError as e:
            self.fail(str(e))

    @property
    def plain_network(self) -> torch.nn.Module:
        """The network without DDP / torch.compile wrappers (its state dict has the checkpoint's keys)."""
        mod = self.network.module if self.is_ddp else self.network
        return getattr(mod, "_orig_mod", mod)

    def fail(self, message: str) -> None:
        """Stop with a message for the user: logged, printed, no traceback (exit status 1)."""
        self.print_to_log_file(f"ERROR: {message}")
        raise SystemExit(f"\n{self.__class__.__name__}: {message}")

    # ----------------------------------------------------------------------------------------------
    # checkpoints: CPU tensors, atomic writes, checkpoint_latest often enough, --c/--val from what loads
    def save_checkpoint(self, filename: str) -> None:
        save_checkpoint_atomically(self, filename)
        if os.path.basename(filename) == "checkpoint_latest.pth":
            self._last_latest_checkpoint = time.monotonic()

    def on_epoch_end(self):
        """nnU-Net's epoch end, with ``checkpoint_latest.pth`` also written when
        :attr:`checkpoint_minutes` have passed since the last one (and every :attr:`save_every` epochs)."""
        every = self.save_every
        if time.monotonic() - self._last_latest_checkpoint >= 60 * self.checkpoint_minutes:
            self.save_every = 1  # nnU-Net's own periodic rule then writes it this epoch
        try:
            self._epoch_end()
        finally:
            self.save_every = every

    def _epoch_end(self) -> None:
        super().on_epoch_end()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's loader, given the newest checkpoint of the run folder that is intact.

        ``--c`` asks for checkpoint_final, else _latest, else _best; ``--val`` for checkpoint_final. A
        file that is not a complete archive (an interrupted copy, a write by an older version) is
        named in the log and skipped for the next newest one.
        """
        if isinstance(filename_or_checkpoint, str):
            filename_or_checkpoint = self._newest_intact_checkpoint(filename_or_checkpoint)
            self.loaded_checkpoint_path = filename_or_checkpoint
        super().load_checkpoint(filename_or_checkpoint)

    def _newest_intact_checkpoint(self, requested: str) -> str:
        folder = os.path.dirname(os.path.abspath(requested))
        candidates = {os.path.abspath(requested)} | {
            os.path.join(folder, name) for name in CHECKPOINT_NAMES if os.path.isfile(os.path.join(folder, name))}
        for path in sorted(candidates, key=lambda p: os.path.getmtime(p) if os.path.exists(p) else -1, reverse=True):
            problem = archive_problem(path)
            if problem is None:
                if path != os.path.abspath(requested):
                    self.print_to_log_file(f"Loading {os.path.basename(path)} instead of {os.path.basename(requested)}.")
                return path
            self.print_to_log_file(f"Skipping {path}: {problem}.")
        self.fail(f"No intact checkpoint in {folder} (tried {', '.join(sorted(os.path.basename(p) for p in candidates))}); "
                  f"train again without --c.")


#: The checkpoints nnU-Net writes into a fold folder.
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def archive_problem(path: str) -> Optional[str]:
    """Why ``path`` is not an intact torch checkpoint (a zip archive whose members pass their CRC), or None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        return f"not a complete checkpoint ({e})"
    return None if bad is None else f"damaged member {bad}"


def pretrained_weights_from_argv(argv=None) -> Optional[Path]:
    """The ``-pretrained_weights`` argument of the running ``nnUNetv2_train``, if any.

    The one place that reads ``sys.argv``: nnU-Net 2.8 passes the path to its own loader
    (``run_training.maybe_load_checkpoint``) after ``initialize()``, never to the trainer, and offers
    no hook; the trainer needs it to check the checkpoint (with the fix in the message) before
    nnU-Net's loader asserts.
    """
    parser = argparse.ArgumentParser(add_help=False)
    # nnUNetv2_train's options that share the prefix, so that `-p PLANS` is read as nnU-Net reads it
    parser.add_argument("-p", default=None)
    parser.add_argument("-pretrained_weights", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return Path(known.pretrained_weights) if known.pretrained_weights else None


def no_augmentation_patch_setup(trainer: nnUNetTrainer, mirror_axes: Optional[Sequence[int]] = None):
    """``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` without spatial augmentation.

    The loader must then crop exactly the patch (not the larger rotation-safe one).
    """
    patch = list(trainer.configuration_manager.patch_size)
    trainer.inference_allowed_mirroring_axes = tuple(mirror_axes) if mirror_axes else None
    return (0.0, 0.0), False, patch, trainer.inference_allowed_mirroring_axes
