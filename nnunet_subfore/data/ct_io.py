"""Reading CT images: the one reader that ``register-unlabeled``, the converters' checks and the figures use.

SimpleITK reads the files (NIfTI, MetaImage, NRRD, ...) and DICOM series; failures become
:class:`UnreadableImageError` with SimpleITK's informative line, so callers can skip a file by
name or stop with one message.

SimpleITK reads a gzip-truncated ``.nii.gz`` (half a download) without an error and fills the
missing part with zeros. :func:`check_complete` therefore reads compressed files to the end of the
gzip stream (which checks its CRC and length) and compares a NIfTI's data size with its header
before SimpleITK sees the file.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.errors import UserError


class UnreadableImageError(UserError):
    """An image file or DICOM series that SimpleITK cannot read."""


class TruncatedImageError(UnreadableImageError):
    """A file that ends before its data does (an interrupted download or copy)."""


_CHUNK = 1 << 22


def check_complete(path: Union[str, Path]) -> None:
    """Refuse a file that ends early: a ``.gz`` must decompress to its end-of-stream marker with a valid
    CRC, and a NIfTI (``.nii``, ``.nii.gz``) must hold as many data bytes as its header announces.

    Raises:
        TruncatedImageError: naming the file and saying to re-download it.
    """
    path = Path(path)
    name = path.name.lower()
    compressed = name.endswith(".gz")
    is_nifti = name.endswith(".nii") or name.endswith(".nii.gz")
    if not compressed and not is_nifti:
        return
    head, size = b"", 0
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                if len(head) < 544:
                    head += chunk[: 544 - len(head)]
                size += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise TruncatedImageError(f"{path} is truncated or corrupt ({e}); re-download it.") from e
    expected = _nifti_size(head) if is_nifti else None
    if expected is not None and size < expected:
        raise TruncatedImageError(
            f"{path} is truncated: its NIfTI header announces {expected} bytes, the file holds {size}; re-download it."
        )


def _nifti_size(head: bytes):
    """Bytes a NIfTI-1/2 file needs (data offset + voxels x bytes per voxel), from its header; None if not NIfTI."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = struct.unpack(order + "f", head[108:112])[0]
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return None
    n = int(dims[0])
    if not 1 <= n <= 7 or any(int(d) < 1 for d in dims[1:n + 1]) or bitpix <= 0:
        return None
    return int(offset) + math.prod(int(d) for d in dims[1:n + 1]) * int(bitpix) // 8


def read_image(path: Union[str, Path], dicom_files: Sequence[str] = ()) -> sitk.Image:
    """An image file, a folder holding exactly one DICOM series, or the given files of one DICOM series.

    Args:
        path: the file or folder (named in errors).
        dicom_files: the series' files in order, when the caller already split a folder into series.

    Raises:
        UnreadableImageError: missing path, several or no series in a folder, or SimpleITK fails.
    """
    path = Path(path)
    try:
        if dicom_files:
            return _read_series(list(dicom_files))
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if len(series) != 1:
                raise UnreadableImageError(
                    f"{path} holds {len(series)} DICOM series {list(series)}; pass a folder with exactly one "
                    f"series, or a NIfTI/MHA file."
                )
            return _read_series(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
        if not path.exists():
            raise UnreadableImageError(f"{path} does not exist.")
        check_complete(path)
        return sitk.ReadImage(str(path))
    except (RuntimeError, OSError) as e:
        raise UnreadableImageError(f"SimpleITK cannot read {path}: {sitk_message(e)}") from e


def _read_series(files: Sequence[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    return reader.Execute()


def read_ct(path: Union[str, Path]) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """One 3D CT volume in HU as float32 (z, y, x), reoriented to LPS, and its (z, y, x) spacing.

    Raises:
        UnreadableImageError: as :func:`read_image`, or the image is not one 3D single-component volume.
    """
    image = read_image(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableImageError(
            f"{path} is a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s); "
            f"one 3D CT volume in HU is needed."
        )
    image = sitk.DICOMOrient(image, "LPS")
    volume = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return volume, tuple(float(v) for v in reversed(image.GetSpacing()))


def sitk_message(error: BaseException) -> str:
    """The informative part of an exception's message: SimpleITK's start with the C++ location."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1].startswith("Reason:"):  # ITK's errno text ("No such file ...") misleads
        lines.pop()
    return re.sub(r"^(sitk::ERROR|ITK ERROR):\s*", "", lines[-1]) if lines else type(error).__name__
