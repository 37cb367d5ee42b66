"""The listers in front of nnU-Net's own converters (AMOS22, MSD BraTS): what they hand on and what they refuse.
The conversions themselves run in test_conversion.py."""

from __future__ import annotations

import json

import pytest
from subfore_test_helpers import fake_label, make_amos, make_brats, write_image

from nnunet_subfore.data.converters.specs import DATASETS
from nnunet_subfore.data.converters.via_nnunet import list_amos, list_msd
from nnunet_subfore.errors import UserError


def test_list_amos_keeps_ct_with_the_official_partition(tmp_path):
    root = make_amos(tmp_path / "dl" / "amos22")
    (root / "labelsVa" / "amos_0013.nii.gz").unlink()

    listing = list_amos(DATASETS["amos22"], tmp_path / "dl")

    assert listing.root == root
    assert [(c.case_id, c.group) for c in listing.cases] == [
        ("amos_0001", "train"), ("amos_0004", "train"), ("amos_0005", "train"), ("amos_0006", "train"),
        ("amos_0008", "val")]  # amos_0540 is an MRI scan (numbers above 500)
    assert listing.cases[-1].images[0] == root / "imagesVa" / "amos_0008.nii.gz"
    assert listing.cases[-1].label == root / "labelsVa" / "amos_0008.nii.gz"
    (case, reason), = listing.problems
    assert case == "amos_0013" and "dataset.json['validation']" in reason and "labelsVa/amos_0013.nii.gz" in reason
    assert listing.test_images == [root / "imagesTs" / "amos_0002.nii.gz"]
    assert listing.metadata == json.loads((root / "dataset.json").read_text())


def test_list_amos_refuses_an_unpublished_dataset_json(tmp_path):
    root = make_amos(tmp_path / "amos22")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background"}}))
    with pytest.raises(UserError, match=r"lacks \['training', 'validation', 'test'\]"):
        list_amos(DATASETS["amos22"], root)
    meta["labels"] = {str(v): str(v) for v in range(14)}  # AMOS has 16 labels, 0..15
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="Use the published release"):
        list_amos(DATASETS["amos22"], root)
    (root / "dataset.json").write_text("{ not json")
    with pytest.raises(UserError, match="Cannot read .*dataset.json"):
        list_amos(DATASETS["amos22"], root)


def test_list_msd_pairs_by_file_name(tmp_path):
    root = make_brats(tmp_path / "Task01_BrainTumour")
    write_image(root / "labelsTr" / "BRATS_009.nii.gz", fake_label([1], 9), spacing=(1, 1, 1), origin=(0, 0, 0))

    listing = list_msd(DATASETS["brats"], root)

    assert [c.case_id for c in listing.cases] == ["BRATS_001", "BRATS_002", "BRATS_003"]  # ._BRATS_001 is not a case
    assert listing.cases[0].images == (root / "imagesTr" / "BRATS_001.nii.gz",)
    (case, reason), = listing.problems
    assert case == "BRATS_009" and "has no image" in reason
    assert listing.test_images == [root / "imagesTs" / "BRATS_010.nii.gz"]


def test_list_msd_refuses_other_modalities_and_labels(tmp_path):
    root = make_brats(tmp_path / "Task01_BrainTumour", n=1)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(dict(meta, modality={"0": "MRI"})))
    with pytest.raises(UserError, match="modalities"):
        list_msd(DATASETS["brats"], root)
    (root / "dataset.json").write_text(json.dumps(dict(meta, labels={"0": "background", "1": "tumour"})))
    with pytest.raises(UserError, match=r"the MSD BraTS \(Task01_BrainTumour\) release has \[0, 1, 2, 3\]"):
        list_msd(DATASETS["brats"], root)
    (root / "dataset.json").write_text(json.dumps({"labels": meta["labels"]}))
    with pytest.raises(UserError, match=r"lacks \['modality'\]"):
        list_msd(DATASETS["brats"], root)
