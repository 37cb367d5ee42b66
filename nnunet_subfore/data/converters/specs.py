"""The public datasets ``convert`` knows: one :class:`DatasetSpec` each (:data:`DATASETS`), and their label tables.

A spec says where the files are, how images pair with labels, the label table and the remap of
source label values, and the paper's train/validation counts; its ``kind`` picks the lister and
writer (:mod:`.native`, :mod:`.via_nnunet`, :mod:`.unlabeled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from nnunet_subfore.errors import UserError


@dataclass(frozen=True)
class PairedLayout:
    """Where a dataset keeps its images and labels, as templates relative to the dataset root.

    ``{num}`` stands for the case number (digits); ``case_id`` names the nnU-Net case.
    """

    image: str
    label: str
    case_id: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the converter needs to know about one public dataset.

    Attributes:
        key: the name on the command line (``btcv``).
        title: the name in messages.
        folder_name: ``Name`` of the output ``DatasetXXX_Name``.
        kind: ``native``, ``nnunet-amos``, ``nnunet-msd`` or ``unlabeled`` (picks lister and writer).
        source_hint: where users get the data, in words.
        layout_hint: what the unpacked download contains, for messages.
        labels: the output label table, name -> value, background included.
        source_values: value in the source label files -> output value (the remap).
        layout: file templates, for ``native`` datasets.
        channels: nnU-Net ``channel_names``.
        paper_split: the paper's (train, validation) counts.
        reference: citation line for dataset.json.
        msd_task: the Decathlon folder name (``Task01_BrainTumour``), for ``nnunet-msd``.
    """

    key: str
    title: str
    folder_name: str
    kind: str
    source_hint: str
    layout_hint: str
    labels: Mapping[str, int] = field(default_factory=dict)
    source_values: Mapping[int, int] = field(default_factory=dict)
    layout: Optional[PairedLayout] = None
    channels: Mapping[str, str] = field(default_factory=lambda: {"0": "CT"})
    paper_split: Optional[Tuple[int, int]] = None
    reference: str = ""
    msd_task: str = ""


def _identity(labels: Mapping[str, int]) -> Dict[int, int]:
    return {int(v): int(v) for v in labels.values()}


BTCV_LABELS = {
    "background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5,
    "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9, "portal and splenic veins": 10,
    "pancreas": 11, "right adrenal gland": 12, "left adrenal gland": 13,
}
FLARE22_LABELS = {
    "background": 0, "liver": 1, "right kidney": 2, "spleen": 3, "pancreas": 4, "aorta": 5,
    "inferior vena cava": 6, "right adrenal gland": 7, "left adrenal gland": 8, "gallbladder": 9,
    "esophagus": 10, "stomach": 11, "duodenum": 12, "left kidney": 13,
}
MMWHS_LABELS = {
    "background": 0, "left ventricle blood cavity": 1, "left ventricle myocardium": 2,
    "right ventricle blood cavity": 3, "left atrium blood cavity": 4, "right atrium blood cavity": 5,
    "ascending aorta": 6, "pulmonary artery": 7,
}
MMWHS_SOURCE_VALUES = {0: 0, 500: 1, 205: 2, 600: 3, 420: 4, 550: 5, 820: 6, 850: 7}
AMOS_LABELS = {
    "background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5,
    "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9, "pancreas": 10,
    "right adrenal gland": 11, "left adrenal gland": 12, "duodenum": 13, "bladder": 14, "prostate/uterus": 15,
}
BRATS_LABELS = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}
BRATS_CHANNELS = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}


DATASETS: Dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec(
            key="btcv", title="BTCV", folder_name="BTCV", kind="native",
            source_hint="the 'RawData' archive of the Multi-Atlas Labeling Beyond the Cranial Vault challenge on Synapse",
            layout_hint="Training/img/img0001.nii.gz and Training/label/label0001.nii.gz (the unpacked RawData folder)",
            labels=BTCV_LABELS, source_values=_identity(BTCV_LABELS),
            layout=PairedLayout("Training/img/img{num}.nii.gz", "Training/label/label{num}.nii.gz", "BTCV_{num}"),
            paper_split=(24, 6),
            reference="Multi-Atlas Labeling Beyond the Cranial Vault (MICCAI 2015), Synapse",
        ),
        DatasetSpec(
            key="flare22", title="FLARE22", folder_name="FLARE22", kind="native",
            source_hint="the labelled training set of the MICCAI FLARE 2022 challenge (grand-challenge / Zenodo)",
            layout_hint="images/FLARE22_Tr_0001_0000.nii.gz and labels/FLARE22_Tr_0001.nii.gz",
            labels=FLARE22_LABELS, source_values=_identity(FLARE22_LABELS),
            layout=PairedLayout("images/FLARE22_Tr_{num}_0000.nii.gz", "labels/FLARE22_Tr_{num}.nii.gz",
                                "FLARE22_Tr_{num}"),
            paper_split=(100, 31),
            reference="MICCAI FLARE 2022 challenge",
        ),
        DatasetSpec(
            key="mmwhs", title="MM-WHS (CT)", folder_name="MMWHS", kind="native",
            source_hint="the CT training set of the MICCAI 2017 Multi-Modality Whole Heart Segmentation challenge",
            layout_hint="ct_train/ct_train_1001_image.nii.gz and ct_train/ct_train_1001_label.nii.gz",
            labels=MMWHS_LABELS, source_values=MMWHS_SOURCE_VALUES,
            layout=PairedLayout("ct_train/ct_train_{num}_image.nii.gz", "ct_train/ct_train_{num}_label.nii.gz",
                                "MMWHS_ct_{num}"),
            paper_split=(14, 6),
            reference="MICCAI 2017 Multi-Modality Whole Heart Segmentation (MM-WHS) challenge",
        ),
        DatasetSpec(
            key="amos22", title="AMOS22 (CT)", folder_name="AMOS22", kind="nnunet-amos",
            source_hint="the post-challenge AMOS 2022 release (amos22.zip on Zenodo, linked from amos22.grand-challenge.org)",
            layout_hint="dataset.json, imagesTr/, labelsTr/, imagesVa/, labelsVa/ and imagesTs/ (the unpacked amos22 folder)",
            labels=AMOS_LABELS, source_values=_identity(AMOS_LABELS),
            paper_split=(240, 120),
            reference="AMOS 2022 (amos22.grand-challenge.org)",
        ),
        DatasetSpec(
            key="brats", title="MSD BraTS (Task01_BrainTumour)", folder_name="BraTS", kind="nnunet-msd",
            source_hint="Task01_BrainTumour.tar of the Medical Segmentation Decathlon (medicaldecathlon.com)",
            layout_hint="dataset.json, imagesTr/BRATS_001.nii.gz (4D: FLAIR, T1w, t1gd, T2w), labelsTr/BRATS_001.nii.gz "
                        "and imagesTs/ (the unpacked Task01_BrainTumour folder)",
            labels=BRATS_LABELS, source_values=_identity(BRATS_LABELS), channels=BRATS_CHANNELS,
            paper_split=(388, 96), msd_task="Task01_BrainTumour",
            reference="Medical Segmentation Decathlon, Task01 BrainTumour",
        ),
        DatasetSpec(
            key="luna16", title="LUNA16", folder_name="LUNA16", kind="unlabeled",
            source_hint="the LUNA16 challenge download (subset0.zip .. subset9.zip, from luna16.grand-challenge.org / Zenodo)",
            layout_hint="subset0/ .. subset9/ holding <seriesuid>.mhd with its .raw",
        ),
        DatasetSpec(
            key="covid19", title="TCIA-COVID19", folder_name="COVID19", kind="unlabeled",
            source_hint="the 'CT Images in COVID-19' collection of The Cancer Imaging Archive (TCIA), as NIfTI volumes",
            layout_hint="NIfTI volumes such as volume-covid19-A-0003.nii.gz (any sub-folders)",
        ),
    )
}


def find_spec(name: str) -> DatasetSpec:
    """The spec for a command-line name (case and '-' ignored: ``MM-WHS`` is ``mmwhs``)."""
    key = str(name).lower().replace("-", "")
    if key not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return DATASETS[key]
