"""Convert public datasets, as their downloads unpack, into nnU-Net v2 raw datasets.

One spec per dataset (:mod:`.specs`, :data:`DATASETS`) says where the files are, how images pair
with labels, the label table and the remap of source label values, and the paper's train/validation
counts. :func:`convert_dataset` (:mod:`.conversion`) picks a lister and a writer by the spec's kind;
the labelled writers share the per-case checks of :mod:`.checks` (files present and paired,
image/label geometry, label values):

- ``native`` (BTCV, FLARE22, MM-WHS), :mod:`.native`: read, check and write each case ourselves;
- ``nnunet-amos`` / ``nnunet-msd`` (AMOS22, MSD BraTS), :mod:`.via_nnunet`: nnU-Net's own
  converters write the dataset, from a checked *view* of the source;
- ``unlabeled`` (LUNA16, TCIA-COVID19), :mod:`.unlabeled`: a layout check (:func:`luna16_sources`,
  :func:`covid19_sources`) that is reusable on its own, then
  :func:`nnunet_subfore.data.register.register_unlabeled`.

:mod:`.layout` finds a dataset's root and its cases, :mod:`.report` holds :class:`ConversionReport`,
:mod:`.splits` writes the paper split (``--paper-split``). Every output folder is claimed through
:class:`nnunet_subfore.data.staging.DatasetStaging` (the rule for existing folders and IDs used by
another name), built in a hidden staging folder next to the target and renamed into place at the
end, so a refused or failed run leaves an earlier output intact. Sources are only read.
"""

from nnunet_subfore.data.converters.checks import label_values
from nnunet_subfore.data.converters.conversion import convert_dataset
from nnunet_subfore.data.converters.native import remap_labels
from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.specs import (
    AMOS_LABELS, BRATS_CHANNELS, BRATS_LABELS, BTCV_LABELS, DATASETS, FLARE22_LABELS, MMWHS_LABELS,
    MMWHS_SOURCE_VALUES, DatasetSpec,
)
from nnunet_subfore.data.converters.splits import paper_fold, paper_splits
from nnunet_subfore.data.converters.unlabeled import (
    SourceListing, btcv_images, covid19_sources, luna16_sources, pretraining_sources,
)

__all__ = [
    "convert_dataset", "ConversionReport", "DATASETS", "DatasetSpec",
    "AMOS_LABELS", "BRATS_CHANNELS", "BRATS_LABELS", "BTCV_LABELS", "FLARE22_LABELS", "MMWHS_LABELS",
    "MMWHS_SOURCE_VALUES",
    "SourceListing", "btcv_images", "covid19_sources", "luna16_sources", "pretraining_sources",
    "paper_fold", "paper_splits", "label_values", "remap_labels",
]
