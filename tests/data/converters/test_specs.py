"""The dataset specs: lookup by command-line name, label tables and remaps, layout hints that match the templates."""

from __future__ import annotations

import re

import pytest

from nnunet_subfore.data.converters.layout import match_template
from nnunet_subfore.data.converters.specs import DATASETS, MMWHS_LABELS, MMWHS_SOURCE_VALUES, find_spec
from nnunet_subfore.errors import UserError


def test_find_spec_ignores_case_and_dashes():
    assert find_spec("MM-WHS") is DATASETS["mmwhs"]
    assert find_spec("BTCV") is DATASETS["btcv"]
    assert find_spec("Flare22") is DATASETS["flare22"]
    assert find_spec("covid-19") is DATASETS["covid19"]


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UserError) as error:
        find_spec("lits")
    message = str(error.value)
    assert "'lits'" in message
    for key in ("btcv", "flare22", "mmwhs", "amos22", "brats", "luna16", "covid19"):
        assert key in message


@pytest.mark.parametrize("key", [k for k, s in DATASETS.items() if s.kind != "unlabeled"])
def test_labelled_specs_remap_onto_consecutive_labels(key):
    spec = DATASETS[key]
    values = sorted(spec.labels.values())
    assert spec.labels["background"] == 0
    assert values == list(range(len(values)))  # nnU-Net requires consecutive label values
    assert spec.source_values[0] == 0
    assert sorted(spec.source_values.values()) == values  # every output label is reachable, each once
    assert spec.paper_split is not None and min(spec.paper_split) > 0


def test_unlabeled_specs_have_no_labels_and_no_paper_split():
    unlabeled = [s for s in DATASETS.values() if s.kind == "unlabeled"]
    assert sorted(s.key for s in unlabeled) == ["covid19", "luna16"]
    assert all(not s.labels and s.paper_split is None for s in unlabeled)


def test_mmwhs_codes_map_to_the_named_structures():
    # MM-WHS label codes as the challenge publishes them
    codes = {500: "left ventricle blood cavity", 205: "left ventricle myocardium", 600: "right ventricle blood cavity",
             420: "left atrium blood cavity", 550: "right atrium blood cavity", 820: "ascending aorta",
             850: "pulmonary artery"}
    for code, structure in codes.items():
        assert MMWHS_SOURCE_VALUES[code] == MMWHS_LABELS[structure]
    assert set(MMWHS_SOURCE_VALUES) == set(codes) | {0}


@pytest.mark.parametrize("key", [k for k, s in DATASETS.items() if s.kind == "native"])
def test_layout_hint_names_files_that_the_templates_find(tmp_path, key):
    """The error message tells users what to look for; those example files must be what the converter looks for."""
    spec = DATASETS[key]
    image_example, label_example = re.findall(r"[\w/\-]+\.nii\.gz", spec.layout_hint)
    for example in (image_example, label_example):
        (tmp_path / example).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / example).touch()
    images = match_template(tmp_path, spec.layout.image)
    labels = match_template(tmp_path, spec.layout.label)
    assert list(images.values()) == [tmp_path / image_example]
    assert list(labels.values()) == [tmp_path / label_example]
    assert images.keys() == labels.keys()
