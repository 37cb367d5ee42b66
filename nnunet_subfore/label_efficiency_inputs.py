"""The preprocessed dataset a label-efficiency experiment reads, checked before any training, and the
derived copy it trains from.

The user's ``nnUNet_preprocessed`` is never written to. The experiment trains from
``OUTDIR/preprocessed/DatasetXXX_NAME``: symlinks to the user's plans file, ``dataset.json``,
``dataset_fingerprint.json``, the configuration's data and ``gt_segmentations`` (real folders of
per-file links, so whatever nnU-Net writes there lands in OUTDIR), plus the experiment's own
``splits_final.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import find_dataset_name, nnunet_folder
from nnunet_subfore.plans_reading import read_plans

#: Files of the preprocessed dataset folder that the trainers read (the plans file besides).
DATASET_FILES = ("dataset.json", "dataset_fingerprint.json")
GT_FOLDER = "gt_segmentations"


@dataclass(frozen=True)
class PreprocessedDataset:
    """A dataset preprocessed with the plans and configuration an experiment trains with.

    Attributes:
        name: the dataset folder name (``Dataset602_BTCV``).
        folder: the user's preprocessed dataset folder.
        plans, configuration: the plans identifier and configuration.
        data_folder: the configuration's preprocessed cases (``folder/<data_identifier>``).
        cases: the case identifiers found there, sorted.
        num_input_channels: channels of ``dataset.json``.
        num_labels: labels of ``dataset.json`` (background included, ``ignore`` not).
    """

    name: str
    folder: Path
    plans: str
    configuration: str
    data_folder: Path
    cases: Tuple[str, ...]
    num_input_channels: int
    num_labels: int

    @property
    def plans_file(self) -> Path:
        return self.folder / f"{self.plans}.json"

    @property
    def dataset_id(self) -> int:
        return _dataset_id(self.name)


def _dataset_id(name: str) -> int:
    """The ID of a ``DatasetXXX_NAME`` folder name."""
    return int(name[len("Dataset"):].split("_", 1)[0])


def read_preprocessed(dataset: Union[int, str], plans: str, configuration: str,
                      preprocessed_root: Optional[Path] = None) -> PreprocessedDataset:
    """The preprocessed dataset, checked: plans, configuration, data and ground truth present.

    Args:
        dataset: ID or ``DatasetXXX_NAME`` in ``preprocessed_root``.
        plans, configuration: what the experiment trains with (the pretraining plans, moved to this dataset).
        preprocessed_root: default ``$nnUNet_preprocessed``.

    Raises:
        UserError: with the missing file and the nnU-Net command that makes it.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    root = nnunet_folder("preprocessed", preprocessed_root)
    name = find_dataset_name(dataset, root)
    folder = (root / name).resolve()
    dataset_id = _dataset_id(name)
    preprocess = f"`nnUNetv2_preprocess -d {dataset_id} -plans_name {plans} -c {configuration}`"
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        raise UserError(_missing_plans_message(plans_file, folder, dataset_id, plans, preprocess))
    manager = PlansManager(read_plans(plans_file))
    if configuration not in manager.available_configurations:
        raise UserError(f"{plans_file} has no configuration {configuration!r} (it has "
                        f"{manager.available_configurations}); pass one of them with -c.")
    config = manager.get_configuration(configuration)
    if config.previous_stage_name is not None:
        raise UserError(f"Configuration {configuration!r} is a cascade stage (it needs the predictions of "
                        f"{config.previous_stage_name!r}); label-efficiency trains one stage: use e.g. 3d_fullres.")
    for file in DATASET_FILES:
        if not (folder / file).is_file():
            raise UserError(f"{folder / file} is missing: the dataset was not fingerprinted and preprocessed; run "
                            f"`nnUNetv2_plan_and_preprocess -d {dataset_id} --no_pp`, then {preprocess}.")
    data_folder = folder / config.data_identifier
    cases = _preprocessed_cases(data_folder, preprocess)
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    _check_ground_truth(folder / GT_FOLDER, cases, dataset_json.get("file_ending", ".nii.gz"), preprocess)
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    labels = [k for k in dataset_json.get("labels", {}) if k != "ignore"]
    return PreprocessedDataset(name, folder, plans, configuration, data_folder, cases, max(1, len(channels)),
                               max(2, len(labels)))


def _missing_plans_message(plans_file: Path, folder: Path, dataset_id: int, plans: str, preprocess: str) -> str:
    found = sorted(p.stem for p in folder.glob("*.json") if p.name not in (*DATASET_FILES, "splits_final.json"))
    return (f"{plans_file} does not exist: dataset {folder.name} has no plans {plans!r} (it has: {found or 'none'}). "
            f"Fine-tuning must use the pretraining plans: copy them with `nnUNetv2_move_plans_between_datasets "
            f"-s PRETRAIN_ID -t {dataset_id} -sp PRETRAIN_PLANS -tp {plans}`, then preprocess with {preprocess}.")


def _preprocessed_cases(data_folder: Path, preprocess: str) -> Tuple[str, ...]:
    """Case identifiers of a preprocessed data folder, as nnU-Net's dataset class reads them."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if not data_folder.is_dir() or not any(data_folder.iterdir()):
        raise UserError(f"{data_folder} does not exist or is empty: the dataset is not preprocessed with these "
                        f"plans and configuration. Run {preprocess}.")
    try:
        cases = infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder))
    except (AssertionError, KeyError) as e:
        raise UserError(f"Cannot tell which preprocessed format {data_folder} holds ({e}); preprocess it again "
                        f"with {preprocess}.") from e
    if len(cases) < 2:
        raise UserError(f"{data_folder} holds {len(cases)} preprocessed case(s); label-efficiency needs at least "
                        f"one case to train on and one to hold out.")
    return tuple(sorted(cases))


def _check_ground_truth(gt_folder: Path, cases: Tuple[str, ...], file_ending: str, preprocess: str) -> None:
    missing = [c for c in cases if not (gt_folder / f"{c}{file_ending}").is_file()]
    if missing:
        raise UserError(f"{gt_folder} lacks the reference segmentation of {len(missing)} case(s) (e.g. "
                        f"{missing[0]}{file_ending}); nnU-Net's evaluation reads them. Run {preprocess}.")


def link_preprocessed(source: PreprocessedDataset, target_root: Path, splits: List[dict]) -> Path:
    """Make ``target_root/<dataset>`` (rebuilt on every call): links to ``source``'s files and its own
    ``splits_final.json`` (``splits``). Returns the folder."""
    target = Path(target_root) / source.name
    if target.exists():
        shutil.rmtree(target)  # links and our splits only: rmtree removes links, never what they point to
    target.mkdir(parents=True)
    for file in (source.plans_file.name, *DATASET_FILES):
        os.symlink(source.folder / file, target / file)
    for folder in (source.data_folder, source.folder / GT_FOLDER):
        (target / folder.name).mkdir()
        for entry in sorted(folder.iterdir()):
            os.symlink(entry.resolve(), target / folder.name / entry.name)
    (target / "splits_final.json").write_text(json.dumps(splits, indent=2), encoding="utf-8")
    return target
