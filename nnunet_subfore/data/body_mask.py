"""Body masks of CT volumes: the label that makes unlabeled CT usable by nnU-Net's fingerprint.

nnU-Net takes its CT intensity statistics (the clip range ``percentile_00_5`` .. ``percentile_99_5``
and the mean/std of ``CTNormalization``) over *labelled* voxels only. Registering unlabeled CT with
the body as label 1 makes those statistics span the whole body, lungs included, so the lower clip
lies near air and the HU foreground criterion of the masking survives preprocessing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_subfore.recipe import BODY_THRESHOLD_HU

DEFAULT_THRESHOLD = BODY_THRESHOLD_HU
"""HU above which a voxel may belong to the body (soft tissue, fat and bone; not air or lung)."""


def body_mask(hu: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The patient's body in a CT volume, lungs and airways included.

    Voxels above ``threshold`` HU, reduced to the largest 3D connected component (which drops the
    table, cables and noise specks), with holes filled slice by slice along axis 0.

    Why slice by slice: the lungs are joined to the trachea, and the trachea (like the lungs
    themselves in a chest scan) leaves the volume through its first or last axial slice. For a 3D
    hole filling, air connected to the volume's border is outside, so lungs and airways would stay
    out of the mask, the body's lowest intensities would be fat (about -100 HU) instead of air,
    and nnU-Net's lower clip would land right at the masking threshold. Within each axial slice
    the lungs and trachea are enclosed by tissue, so a 2D fill takes them in. (Where the body
    itself is cut by the field of view in a slice, air open to that edge stays outside.)

    Args:
        hu: 3D array in Hounsfield units, SimpleITK numpy order ``(z, y, x)`` (axis 0 axial).
        threshold: HU above which a voxel may be body.

    Returns:
        Boolean array of ``hu``'s shape; all False if no voxel lies above ``threshold`` (the
        caller decides what an empty body means).

    Raises:
        ValueError: ``hu`` is not 3D.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"body_mask needs a 3D (z, y, x) volume, got an array of shape {hu.shape}.")
    above = hu > threshold
    components, count = ndimage.label(above)
    if count == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    del components, above
    for k in range(largest.shape[0]):
        largest[k] = ndimage.binary_fill_holes(largest[k])
    return largest
