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
dataset untouched. Replacing (``force``) swaps the two folders in one atomic ``renameat2`` exchange
on Linux, then deletes the old one: a kill at any moment leaves either the old or the new dataset
complete in place. Elsewhere the old folder is first renamed into the hidden work folder; a run
killed between the two renames leaves it there, and the next claim of the dataset puts it back.
Hidden work folders of runs that no longer live are removed (and named) by the next claim.

A *resumable* claim (``register-unlabeled``) builds in a work folder of a fixed name
(``.DatasetXXX_Name.resumable``) that a failed or killed run leaves in place, so that the same command
run again continues where it stopped; ``force`` removes it and starts over. A lock in it keeps two
runs from writing one dataset at the same time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Optional

from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import dataset_folder_name, dataset_prefix

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
    if Path(raw_root).exists() and not Path(raw_root).is_dir():
        raise UserError(f"The raw folder {raw_root} is a file, not a folder: pass nnU-Net's raw folder "
                        f"(--raw-root or $nnUNet_raw).")
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
        others = sorted(p.name for p in root.glob(f"{dataset_prefix(dataset_id)}*")
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
        resumable: build in ``.DatasetXXX_Name.resumable``, kept when the run ends without a commit, continued by
            the next resumable claim (removed first with ``force``).

    Attributes:
        destination: the dataset folder ``raw_root/DatasetXXX_name`` (resolved).
        path: where the dataset is built.
        resumed: whether :attr:`path` holds the work of an earlier run (resumable claims only).
    """

    def __init__(
        self,
        raw_root: Path,
        dataset_id: int,
        name: str,
        force: bool = False,
        protected: Iterable[Path] = (),
        resumable: bool = False,
    ) -> None:
        destination = Path(raw_root).resolve() / dataset_folder_name(dataset_id, name)
        recover_interrupted_runs(destination)
        self.destination = check_dataset_free(raw_root, dataset_id, name, force, protected)
        self.force = force
        self.resumable = resumable
        self.committed = False
        suffix = _RESUMABLE if resumable else f"{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._work = self.destination.parent / f".{self.destination.name}{suffix}"
        self.path = self._work / self.destination.name
        self.resumed = False
        self._lock = None

    def __enter__(self) -> "DatasetStaging":
        if not self.resumable:
            self.path.mkdir(parents=True)
            return self
        self._work.mkdir(parents=True, exist_ok=True)
        self._lock = open(self._work / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise UserError(f"Another run is writing {self.destination.name} ({self._work}); wait for it to end.") from None
        if self.force and self.path.exists():
            shutil.rmtree(self.path)
        self.resumed = self.path.is_dir()
        self.path.mkdir(exist_ok=True)
        return self

    def commit(self) -> Path:
        """Put the staged dataset in place of the destination (replacing an existing one only with ``force``)."""
        if self.force and (self.destination.exists() or self.destination.is_symlink()):
            if self.destination.is_dir() and not self.destination.is_symlink() and _exchange(self.path, self.destination):
                self.committed = True
                return self.destination  # the old dataset now lies at self.path, removed with the work folder
            old = self._work / _REPLACED
            self.destination.rename(old)
            self.path.rename(self.destination)
            self.committed = True
            return self.destination
        self.path.rename(self.destination)
        self.committed = True
        return self.destination

    def discard(self) -> None:
        """Nothing to put in place and nothing to resume: the work folder goes when the block ends."""
        self._discarded = True

    def __exit__(self, *exc) -> None:
        _restore_replaced(self._work, self.destination)
        if self.committed or not self.resumable or getattr(self, "_discarded", False):
            shutil.rmtree(self._work, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()


_PARTIAL = ".partial-"
_RESUMABLE = ".resumable"
_REPLACED = "replaced"


def recover_interrupted_runs(destination: Path) -> None:
    """Clean up after runs that claimed ``destination`` and died: restore a dataset a killed ``--force``
    left in its work folder (if nothing took its place), then remove the work folders, naming each."""
    pattern = re.compile(re.escape(f".{destination.name}{_PARTIAL}") + r"(\d+)-[0-9a-f]+$")
    for work in sorted(destination.parent.glob(f".{destination.name}{_PARTIAL}*")):
        match = pattern.match(work.name)
        if not match or not work.is_dir() or _process_alive(int(match.group(1))):
            continue
        if _restore_replaced(work, destination):
            print(f"Restored {destination} from {work} (an interrupted --force had moved it aside).")
        shutil.rmtree(work, ignore_errors=True)
        print(f"Removed {work}, the work folder of an interrupted run.")


def _restore_replaced(work: Path, destination: Path) -> bool:
    """Put back a dataset that a replacement moved aside, if nothing took its place; True if it did."""
    replaced = work / _REPLACED
    if replaced.is_dir() and not (destination.exists() or destination.is_symlink()):
        replaced.rename(destination)
        return True
    return False


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unavailable."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _renameat2() -> Optional[ctypes._CFuncPtr]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
