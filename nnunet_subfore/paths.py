"""nnU-Net's folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) and dataset naming.

Read from the environment when asked, not at import (nnU-Net reads them at import time, which is
why the demo sets them before it starts nnU-Net subprocesses).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

from nnunet_subfore.errors import UserError

_ENV = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}


def nnunet_folder(kind: str, override: Optional[Union[str, Path]] = None) -> Path:
    """``override`` if given, else the folder named by ``$nnUNet_raw`` / ``_preprocessed`` / ``_results``."""
    if kind not in _ENV:
        raise ValueError(f"kind must be one of {sorted(_ENV)}, got {kind!r}.")
    if override is not None:
        return Path(override)
    value = os.environ.get(_ENV[kind])
    if not value:
        raise UserError(
            f"${_ENV[kind]} is not set. Export it (e.g. `export {_ENV[kind]}=/data/{_ENV[kind]}`) as for any "
            f"nnU-Net command, or pass the folder explicitly."
        )
    return Path(value)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's ``DatasetXXX_Name``; validates both parts."""
    try:
        dataset_id = int(dataset_id)
    except (TypeError, ValueError):
        raise UserError(f"Dataset ID must be a number between 1 and 999, got {dataset_id!r}.") from None
    if not 1 <= dataset_id <= 999:
        raise UserError(f"Dataset ID must be between 1 and 999, got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", name):
        raise UserError(
            f"Dataset name {name!r} must consist of letters, digits and '-' (nnU-Net splits folder names at '_')."
        )
    return f"{dataset_prefix(dataset_id)}{name}"


def dataset_prefix(dataset_id: int) -> str:
    """``DatasetXXX_``: what every folder name of dataset ``dataset_id`` starts with."""
    return f"Dataset{int(dataset_id):03d}_"


def find_dataset_name(dataset: Union[int, str], root: Path) -> str:
    """Resolve an ID (``601``) or a full name (``Dataset601_CTPretrain``) to the folder name under ``root``."""
    text = str(dataset)
    if text.startswith("Dataset"):
        if not (root / text).is_dir():
            raise UserError(f"{root / text} does not exist.")
        return text
    try:
        dataset_id = int(text)
    except ValueError:
        raise UserError(f"Dataset must be an ID like 601 or a name like Dataset601_CTPretrain, got {text!r}.")
    matches = sorted(p.name for p in root.glob(f"{dataset_prefix(dataset_id)}*") if p.is_dir())
    if not matches:
        raise UserError(f"No folder {dataset_prefix(dataset_id)}* in {root}.")
    if len(matches) > 1:
        raise UserError(f"Several datasets with ID {dataset_id} in {root}: {matches}. Pass the full name.")
    return matches[0]


def trainer_output_folder(results_root: Union[str, Path], dataset_folder: str, trainer: str, plans: str,
                          configuration: str) -> Path:
    """nnU-Net's result folder of a run, ``<results>/<DatasetXXX_Name>/<trainer>__<plans>__<configuration>``,
    named by nnU-Net's own helper (the fold folders ``fold_N`` lie inside)."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    return Path(results_root) / dataset_folder / convert_trainer_plans_config_to_identifier(trainer, plans, configuration)
