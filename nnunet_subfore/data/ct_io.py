"""Reading CT images: the one reader that ``register-unlabeled``, the converters' checks and the figures use.

SimpleITK reads the files (NIfTI, MetaImage, NRRD, ...) and DICOM series; failures become
:class:`UnreadableImageError` with SimpleITK's informative line, so callers can skip a file by
name or stop with one message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.errors import UserError


class UnreadableImageError(UserError):
    """An image file or DICOM series that SimpleITK cannot read."""


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
    return re.sub(r"^(sitk::ERROR|ITK ERROR):\s*", "", lines[-1]) if lines else type(error).__name__
