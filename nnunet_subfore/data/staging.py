"""Claim an nnU-Net raw dataset folder safely: refuse what must not be replaced, build beside it, move into place.

Every writer of raw datasets (``register-unlabeled``, ``convert``, the synthetic phantoms) claims its
``DatasetXXX_Name`` folder here, under one rule:

- ``DatasetXXX_Name`` itself exists: refused unless ``force``; with ``force`` it is replaced.
- ``DatasetXXX_Other`` (the same ID, another name) exists in the raw root, or in the
  ``$nnUNet_preprocessed`` / ``$nnUNet_results`` folder: refused, even with ``force``. nnU-Net finds
  a dataset by its ID, so one ID must name one dataset; ``force`` replaces *this* dataset, never
  another one. The message names the folder: choose another ID, or delete it by hand.
- the dataset folder and an input (a protected path) overlap, one inside the other: refused.

All refusals happen before anything is written. The dataset is built in a hidden folder beside its
destination and moved into place on commit, so an interrupted or failed run leaves an earlier
dataset untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import dataset_folder_name

_OTHER_NNUNET_FOLDERS = ("nnUNet_preprocessed", "nnUNet_results")
"""Environment variables of the nnU-Net folders where another name for the same ID is also refused."""


def check_dataset_free(
    raw_root: Path,
    dataset_id: int,
    name: str,
    force: bool = False,
    protected: Iterable[Path] = (),
) -> Path:
    """Apply the rule of this module to ``raw_root/DatasetXXX_name``; return that folder (resolved).

    Args:
        raw_root: the ``nnUNet_raw`` folder (need not exist).
        dataset_id: 1..999.
        name: dataset name (letters, digits, '-').
        force: whether an existing ``DatasetXXX_name`` may be replaced.
        protected: paths (the inputs) that must neither contain nor lie inside the dataset folder.

    Raises:
        UserError: bad ID or name, the folder and a protected path overlap, the ID is used by another
            dataset name, or the folder exists and ``force`` is False.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    raw_root = Path(raw_root).resolve()
    destination = raw_root / folder_name
    for source in protected:
        source = Path(source).resolve()
        if _is_within(destination, source) or _is_within(source, destination):
            raise UserError(
                f"The dataset folder {destination} and the input {source} overlap (one lies inside the other); "
                f"inputs are never modified. Use a raw folder outside the inputs (--raw-root or $nnUNet_raw)."
            )
    roots = [raw_root] + [Path(os.environ[v]) for v in _OTHER_NNUNET_FOLDERS if os.environ.get(v)]
    for root in roots:
        if not root.is_dir():
            continue
        others = sorted(p.name for p in root.glob(f"Dataset{int(dataset_id):03d}_*")
                        if p.is_dir() and p.name != folder_name)
        if others:
            raise UserError(
                f"Dataset ID {int(dataset_id)} is already used by {others[0]} in {root}; nnU-Net needs one name per "
                f"ID, and --force only replaces {folder_name} itself. Choose another dataset ID (-d), or delete "
                f"{root / others[0]} by hand if it is obsolete."
            )
    if (destination.exists() or destination.is_symlink()) and not force:
        raise UserError(
            f"{destination} already exists (dataset ID {int(dataset_id)}) and was left unchanged. Pass --force "
            f"(force=True) to replace it, or choose another dataset ID (-d)."
        )
    return destination


class DatasetStaging:
    """Build an nnU-Net raw dataset in a hidden folder beside its destination; move it into place on commit.

    Construction applies :func:`check_dataset_free` (nothing is written before). On entering the
    ``with`` block, :attr:`path` is an empty folder named like the destination, inside a hidden work
    folder of the raw root (same file system, so the commit is a rename); the work folder may also
    hold scratch files next to :attr:`path`. :meth:`commit` replaces an existing destination (only
    possible with ``force``) by :attr:`path`. Leaving the block removes the work folder; without a
    commit nothing else changes.

    Args:
        raw_root: the ``nnUNet_raw`` folder (created on entry if missing).
        dataset_id: 1..999.
        name: dataset name (letters, digits, '-').
        force: replace an existing ``DatasetXXX_name``.
        protected: paths that must neither contain nor lie inside the dataset folder.

    Attributes:
        destination: the dataset folder ``raw_root/DatasetXXX_name`` (resolved).
        path: where the dataset is built.
    """

    def __init__(
        self,
        raw_root: Path,
        dataset_id: int,
        name: str,
        force: bool = False,
        protected: Iterable[Path] = (),
    ) -> None:
        self.destination = check_dataset_free(raw_root, dataset_id, name, force, protected)
        self.force = force
        self._work = self.destination.parent / f".{self.destination.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = self._work / self.destination.name

    def __enter__(self) -> "DatasetStaging":
        self.path.mkdir(parents=True)
        return self

    def commit(self) -> Path:
        """Remove the dataset being replaced, if any, and move the staged one to its destination."""
        if self.force:
            if self.destination.is_dir() and not self.destination.is_symlink():
                shutil.rmtree(self.destination)
            elif self.destination.exists() or self.destination.is_symlink():
                self.destination.unlink()
        self.path.rename(self.destination)
        return self.destination

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self._work, ignore_errors=True)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
