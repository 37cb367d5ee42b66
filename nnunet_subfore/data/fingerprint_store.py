"""Fingerprints and near-duplicate descriptors of image files, computed once.

Reading every volume of a collection at each ``check-overlap`` costs minutes at a thousand CT scans. The
store keeps, per image file, its exact fingerprint (:func:`nnunet_subfore.data.fingerprints.image_fingerprint`)
and its near-duplicate descriptor (:func:`nnunet_subfore.data.near_duplicates.image_descriptor`), both
computed from one read, in a cache folder: ``--cache DIR``, else ``$SUBFORE_CACHE``, else
``~/.cache/nnunet_subfore/fingerprints``. Never inside a user's dataset. An entry is keyed by the file's
name, inode, size and modification time (for a DICOM folder: of every file in it), so a changed,
rewritten or copied file is read again, and a renamed dataset folder is not; an entry of another scheme
is recomputed. ``register-unlabeled`` fills the store while it has each volume in memory. Entries are written
atomically (a kill never leaves a half-written one that is then trusted).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from nnunet_subfore.data.ct_io import read_image
from nnunet_subfore.data.fingerprints import FINGERPRINT_SCHEME, image_fingerprint
from nnunet_subfore.data.near_duplicates import (
    DESCRIPTOR_SCHEME,
    Descriptor,
    descriptor_from_arrays,
    descriptor_to_arrays,
    image_descriptor,
)

#: The environment variable that moves the store.
CACHE_VARIABLE = "SUBFORE_CACHE"


def default_store_folder() -> Path:
    """``$SUBFORE_CACHE/fingerprints``, else ``~/.cache/nnunet_subfore/fingerprints``."""
    root = os.environ.get(CACHE_VARIABLE)
    return (Path(root) if root else Path.home() / ".cache" / "nnunet_subfore") / "fingerprints"


def file_identity(path: Union[str, Path]) -> str:
    """The key of a file's entry: its name, device, inode, size and modification time (a DICOM folder: those of
    every file in it). A rename or move within a file system (the dataset folder put in place after registration)
    keeps the key; a copy, a rewrite or a change gets a new one."""
    path = Path(path)
    members = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    parts = [path.name]
    for member in members:
        st = member.stat()
        parts.append(f"{member.name}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


class FingerprintStore:
    """Exact fingerprints and descriptors of image files, read once per file version.

    Args:
        folder: where the entries live (default :func:`default_store_folder`); created when first written.

    Attributes:
        reads: how many images this store has read (the rest came from entries).
        write_failed: whether an entry could not be written (warned once).
    """

    def __init__(self, folder: Optional[Union[str, Path]] = None):
        self.folder = Path(folder) if folder is not None else default_store_folder()
        self.reads = 0
        self.write_failed = False

    def entry(self, path: Union[str, Path]) -> Tuple[str, Optional[Descriptor]]:
        """``(exact fingerprint, descriptor)`` of an image file (or DICOM folder); the descriptor is None for an image
        that is not 3D and single-channel (only copies of it are found)."""
        stored = self.folder / f"{file_identity(path)}.npz"
        if stored.is_file():
            try:
                with np.load(stored, allow_pickle=False) as arrays:
                    if str(arrays["scheme"]) == FINGERPRINT_SCHEME and str(arrays["descriptor_scheme"]) == DESCRIPTOR_SCHEME:
                        return str(arrays["exact"]), descriptor_from_arrays(arrays) if "grid" in arrays else None
            except (OSError, ValueError, KeyError, EOFError):
                pass  # a damaged entry: computed again and replaced
        image = read_image(path)
        self.reads += 1
        return self.put(path, image)

    def put(self, path: Union[str, Path], image) -> Tuple[str, Optional[Descriptor]]:
        """Store the entry of the file ``path`` from ``image``, the image it holds (already in memory)."""
        exact = image_fingerprint(image)
        try:
            descriptor = image_descriptor(image)
        except ValueError:
            descriptor = None
        self._write(self.folder / f"{file_identity(path)}.npz", exact, descriptor)
        return exact, descriptor

    def exact(self, path: Union[str, Path]) -> str:
        return self.entry(path)[0]

    def _write(self, stored: Path, exact: str, descriptor: Optional[Descriptor]) -> None:
        """Write an entry atomically; a store that cannot be written (a read-only home on a cluster node) costs
        the reuse, not the result: one warning, and the fingerprints are computed again next time."""
        partial = stored.with_name(f".{stored.stem}.{os.getpid()}.partial.npz")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(partial, scheme=np.array(FINGERPRINT_SCHEME),
                                descriptor_scheme=np.array(DESCRIPTOR_SCHEME), exact=np.array(exact),
                                **(descriptor_to_arrays(descriptor) if descriptor else {}))
            os.replace(partial, stored)
        except OSError as e:
            if partial.parent.is_dir():
                partial.unlink(missing_ok=True)
            if not self.write_failed:
                warnings.warn(f"Fingerprint store {self.folder} cannot be written ({e}): fingerprints are not kept "
                              f"and will be computed again. Set ${CACHE_VARIABLE} (or --cache) to a writable folder.",
                              stacklevel=3)
            self.write_failed = True
