"""Synthetic CT phantoms: anatomy, HU, labels, variety, determinism, the dataset writers and `nnunet-subfore phantoms`."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_subfore.cli import main
from nnunet_subfore.data.body_mask import body_mask
from nnunet_subfore.data.phantoms import (
    HU,
    LABELS,
    PHANTOMS_FILE,
    VARIETIES,
    PhantomVariety,
    heldout_cases,
    make_phantom,
    phantom_case,
    write_labelled_dataset,
    write_phantom_dataset,
    write_unlabeled_images,
)
from nnunet_subfore.data.register import register_unlabeled
from nnunet_subfore.errors import UserError

SHAPE = (32, 48, 48)
SEEDS = range(6)
NO_ARMS = VARIETIES["wide"].with_changes(arms_probability=0.0)


@pytest.fixture(autouse=True)
def _no_nnunet_folders(monkeypatch):
    """The same-ID check also looks in $nnUNet_preprocessed / $nnUNet_results: keep the user's out of these tests."""
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)


def organ_core_mean(image, label, organ):
    core = ndimage.binary_erosion(label == LABELS[organ])
    assert core.sum() >= 10, organ
    return float(image[core].mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_hu_ranges_and_labels(seed):
    image, label, spacing = make_phantom(seed, SHAPE, (2.0, 1.0, 1.0))
    case = phantom_case(seed, SHAPE, (2.0, 1.0, 1.0))
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == SHAPE and label.shape == SHAPE
    assert spacing == (2.0, 1.0, 1.0)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert image.min() >= -1024 and image[:, :4, :4].mean() < -900  # air in the corners

    # the liver has its phase's HU (plus the scanner offset) inside its soft boundary; texture and noise average out
    liver = organ_core_mean(image, label, "liver")
    assert abs(liver - (case.tissue_hu["liver"] + case.scanner_offset)) < 15

    # bone, fat and lung are present
    assert np.count_nonzero(image > 250 + case.scanner_offset) > 20 and image.max() < 1200
    assert np.count_nonzero(np.abs(image - HU["fat"] - case.scanner_offset) < 30) > 200
    outline = np.stack([ndimage.binary_fill_holes(s) for s in image > -500])  # per slice: see body_mask
    assert np.count_nonzero(outline & (image < -700)) > 200  # lung inside the body outline


@pytest.mark.parametrize("seed", SEEDS)
def test_air_around_the_body_a_table_below_it_and_large_lungs(seed):
    image, _, _ = make_phantom(seed, SHAPE, variety=NO_ARMS)
    body = body_mask(image)
    ys, xs = np.nonzero(body.any(axis=0))
    assert ys.min() >= 1 and xs.min() >= 1 and xs.max() <= SHAPE[2] - 2, "air in front and on both sides"
    below = image[:, ys.max() + 1:, :]
    table = below > -300  # the couch's dense shell (blurred into its foam core), below the back
    assert table.any() and np.count_nonzero(table.any(axis=(0, 1))) > 0.6 * SHAPE[2], "a table across the field of view"
    assert not body[:, ys.max() + 1:, :].any(), "the table is not body"
    lungs = body & (image < -700)
    assert lungs.sum() > 0.01 * body.sum(), "some lung in every scan range"
    assert np.median(image[lungs]) < -750, "air-like lungs"


def test_lungs_fill_a_chest_scan():
    chest = VARIETIES["wide"].with_changes(chest_share=(1.0, 1.0), scan_range=(1.5, 2.0))
    for seed in range(3):
        image, _, _ = make_phantom(seed, SHAPE, variety=chest)
        body = body_mask(image)
        upper = slice(SHAPE[0] // 2, None)
        assert np.count_nonzero(body[upper] & (image[upper] < -700)) > 0.2 * body[upper].sum()


def test_arms_lie_beside_the_body_in_some_cases():
    arms = VARIETIES["wide"].with_changes(arms_probability=1.0, body_width=(0.65, 0.7))
    assert phantom_case(0, SHAPE, variety=arms).arms and not phantom_case(0, SHAPE, variety="narrow").arms
    image, _, _ = make_phantom(0, SHAPE, variety=arms)
    xs = np.nonzero(body_mask(image).any(axis=(0, 1)))[0]
    tissue = (image > -500).any(axis=(0, 1))
    assert tissue[: xs.min()].any() and tissue[xs.max() + 1:].any(), "an arm on each side, apart from the body"


@pytest.mark.parametrize("seed", [0, 5])
def test_airways_reach_the_top_slice_and_join_the_lungs(seed):
    chest = VARIETIES["wide"].with_changes(chest_share=(1.0, 1.0), scan_range=(3.0, 3.5))  # carina in view
    image, _, _ = make_phantom(seed, SHAPE, variety=chest)
    air = image < -500
    components, _ = ndimage.label(air)
    sizes = np.bincount(components.ravel())
    sizes[[0, components[0, 0, 0]]] = 0  # not air, outside
    lungs = int(np.argmax(sizes))
    assert sizes[lungs] > 0.85 * sizes.sum(), "both lungs and the airways are one air space (bowel gas is the rest)"
    assert lungs in set(np.unique(components[-1][air[-1]])), "the trachea leaves through the last slice"
    # which is why a 3D hole filling leaves the lungs out of the body
    filled_3d = ndimage.binary_fill_holes(image > -500)
    assert not (filled_3d & (components == lungs)).any()


def test_same_seed_same_phantom_and_the_variety_matters():
    a = make_phantom(3, SHAPE)
    b = make_phantom(3, SHAPE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], make_phantom(3, SHAPE, variety="narrow")[0])


def test_cases_vary_in_body_spacing_organ_intensity_and_noise():
    cases = [phantom_case(seed, SHAPE) for seed in range(12)]
    phantoms = [make_phantom(seed, SHAPE) for seed in range(4)]
    assert len({c.spacing for c in cases}) == len(cases)
    assert len({c.phase for c in cases}) >= 3
    liver = [organ_core_mean(image, label, "liver") for image, label, _ in phantoms]
    assert max(liver) - min(liver) > 20
    body_sizes = {int(np.count_nonzero(body_mask(image))) for image, _, _ in phantoms}
    assert len(body_sizes) == len(phantoms)
    liver_centres = {tuple(np.round(ndimage.center_of_mass(label == 1), 1)) for _, label, _ in phantoms}
    assert len(liver_centres) == len(phantoms)
    # the measured noise follows the drawn level: differences of neighbours inside the liver (texture is smooth)
    quiet, loud = sorted(range(12), key=lambda s: cases[s].noise_sd)[::11]
    noise = {}
    for seed in (quiet, loud):
        image, label, _ = make_phantom(seed, SHAPE)
        core = ndimage.binary_erosion(label == LABELS["liver"])
        pairs = core[:, :, 1:] & core[:, :, :-1]
        noise[seed] = np.diff(image.astype(float), axis=2)[pairs].std()
    assert cases[loud].noise_sd > 2 * cases[quiet].noise_sd and noise[loud] > 1.5 * noise[quiet]


def test_narrow_variety_lies_within_wide_and_spreads_less():
    wide, narrow = VARIETIES["wide"], VARIETIES["narrow"]
    assert wide.covers(narrow) and not narrow.covers(wide)
    spread = {}
    for name in ("narrow", "wide"):
        cases = [phantom_case(seed, SHAPE, variety=name) for seed in range(16)]
        spread[name] = {
            "in-plane spacing": np.ptp([c.spacing[1] for c in cases]),
            "liver HU": np.ptp([c.tissue_hu["liver"] + c.scanner_offset for c in cases]),
            "noise": np.ptp([c.noise_sd for c in cases]),
            "body width": np.ptp([c.body_width for c in cases]),
            "phases": len({c.phase for c in cases}),
        }
    assert spread["narrow"]["in-plane spacing"] == 0 and spread["narrow"]["phases"] == 1
    for key in ("liver HU", "noise", "body width"):
        assert spread["narrow"][key] < 0.3 * spread["wide"][key], key


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shape"):
        make_phantom(0, (8, 32, 32))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(0, SHAPE, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="variety must be one of"):
        make_phantom(0, SHAPE, variety="medium")
    with pytest.raises(ValueError, match="noise_sd"):
        PhantomVariety(noise_sd=(20.0, 10.0))
    with pytest.raises(ValueError, match="phases"):
        PhantomVariety(phases=("venous",))


def test_write_labelled_dataset(tmp_path):
    folder = write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=3, num_test=2, seed=1, shape=SHAPE,
                                    spacing=(2.0, 1.0, 1.0))
    assert folder == (tmp_path / "Dataset007_Phantoms").resolve()
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"phantom_00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["phantom_003.nii.gz", "phantom_004.nii.gz"]
    image = sitk.ReadImage(str(folder / "imagesTr" / "phantom_000_0000.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / "phantom_000.nii.gz"))
    assert np.allclose(image.GetSpacing(), (1.0, 1.0, 2.0))
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1, 2, 3}
    assert not list(tmp_path.glob(".*")), "no staging folder left behind"

    before = (folder / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes()
    with pytest.raises(UserError, match="force"):
        write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=1, shape=SHAPE)
    for force in (False, True):  # the same ID with another name: refused, --force replaces this dataset only
        with pytest.raises(UserError, match="already used by Dataset007_Phantoms"):
            write_labelled_dataset(tmp_path, 7, "Other", num_training=1, shape=SHAPE, force=force)
    assert (folder / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes() == before

    replaced = write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=1, shape=SHAPE, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_Phantoms"]
    assert json.loads((replaced / "dataset.json").read_text())["numTraining"] == 1


def test_labelled_cases_from_a_narrow_variety_held_out_cases_from_a_wide_one(tmp_path):
    folder = write_labelled_dataset(tmp_path, 8, "Split", num_training=3, num_test=3, seed=2, shape=SHAPE,
                                    variety="narrow", test_variety="wide")
    record = json.loads((folder / PHANTOMS_FILE).read_text())
    assert record["varieties"] == {"training": "narrow", "test": "wide"} and record["seed"] == 2
    spacing = {split: [sitk.ReadImage(str(p)).GetSpacing()[0] for p in sorted((folder / f"images{split}").iterdir())]
               for split in ("Tr", "Ts")}
    assert spacing["Tr"] == [1.5, 1.5, 1.5] and len(set(spacing["Ts"])) == 3
    assert {record["cases"][f"phantom_00{i}"]["phase"] for i in range(3)} == {"portal-venous"}
    assert heldout_cases(folder) == ["phantom_003", "phantom_004", "phantom_005"]


def test_held_out_cases_in_the_training_folder_for_label_efficiency(tmp_path):
    """``heldout_in_training_folder``: one imagesTr with every case, the held-out ones named in the record."""
    apart = write_labelled_dataset(tmp_path / "a", 9, "Apart", num_training=2, num_test=2, seed=5, shape=SHAPE,
                                   variety="narrow", test_variety="wide")
    inside = write_labelled_dataset(tmp_path / "b", 9, "Apart", num_training=2, num_test=2, seed=5, shape=SHAPE,
                                    variety="narrow", test_variety="wide", heldout_in_training_folder=True)
    assert not (inside / "imagesTs").exists() and not (inside / "labelsTs").exists()
    assert sorted(p.name for p in (inside / "labelsTr").iterdir()) == [f"phantom_00{i}.nii.gz" for i in range(4)]
    assert json.loads((inside / "dataset.json").read_text())["numTraining"] == 4
    assert heldout_cases(inside) == heldout_cases(apart) == ["phantom_002", "phantom_003"]
    for case in heldout_cases(inside):  # the same wide-variety phantoms, only in another folder
        for sub, ending in (("images", "_0000.nii.gz"), ("labels", ".nii.gz")):
            assert (inside / f"{sub}Tr" / f"{case}{ending}").read_bytes() == \
                   (apart / f"{sub}Ts" / f"{case}{ending}").read_bytes()
    with pytest.raises(UserError, match="names no held-out cases"):
        heldout_cases(tmp_path)


@pytest.mark.parametrize("file_format", ["nii.gz", "mha"])
def test_write_unlabeled_images(tmp_path, file_format):
    paths = write_unlabeled_images(tmp_path / "ct", 2, seed=4, shape=SHAPE, spacing=(2.0, 1.0, 1.0),
                                   file_format=file_format)
    assert [p.name for p in paths] == [f"ct_000.{file_format}", f"ct_001.{file_format}"]
    images = [sitk.ReadImage(str(p)) for p in paths]
    assert all(np.allclose(im.GetSpacing(), (1.0, 1.0, 2.0)) for im in images)
    assert images[0].GetOrigin() != images[1].GetOrigin()
    assert sitk.GetArrayFromImage(images[0]).min() < -900
    assert len(list((tmp_path / "ct").iterdir())) == 2

    with pytest.raises(UserError, match="ct_000"):
        write_unlabeled_images(tmp_path / "ct", 1, file_format=file_format, shape=SHAPE)
    write_unlabeled_images(tmp_path / "ct", 1, seed=9, file_format=file_format, shape=SHAPE, force=True)
    with pytest.raises(ValueError, match="file_format"):
        write_unlabeled_images(tmp_path / "other", 1, file_format="png")


def test_unlabeled_dataset_has_the_body_labels_register_unlabeled_writes(tmp_path):
    folder = write_phantom_dataset(41, "Pre", 3, seed=0, unlabeled=True, raw_root=tmp_path / "raw", shape=SHAPE)
    registered = register_unlabeled([folder / "imagesTr"], 42, "Again", raw_root=tmp_path / "raw", progress=False)
    assert registered.exit_code() == 0
    again = registered.output_dir
    for ours, theirs in zip(sorted((folder / "labelsTr").iterdir()), sorted((again / "labelsTr").iterdir())):
        a, b = sitk.ReadImage(str(ours)), sitk.ReadImage(str(theirs))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()
    meta, reference = (json.loads((f / "dataset.json").read_text()) for f in (folder, again))
    assert {k: v for k, v in meta.items() if k not in ("name", "description")} == \
           {k: v for k, v in reference.items() if k not in ("name", "description")}
    assert PHANTOMS_FILE in meta["description"]
    # labelled and unlabeled datasets of one seed share no case
    labelled = write_phantom_dataset(43, "Lab", 1, seed=0, raw_root=tmp_path / "raw", shape=SHAPE)
    first = [sitk.GetArrayFromImage(sitk.ReadImage(str(f / "imagesTr" / "phantom_000_0000.nii.gz")))
             for f in (folder, labelled)]
    assert first[0].shape != first[1].shape or not np.array_equal(*first)


def test_phantoms_command(tmp_path, capsys):
    raw = tmp_path / "raw"
    argv = ["phantoms", "-d", "44", "-n", "Cli", "--cases", "2", "--seed", "3", "--shape", "24", "40", "40",
            "--raw-root", str(raw)]
    assert main(argv) == 0
    assert "nnUNetv2_plan_and_preprocess -d 44" in capsys.readouterr().out
    folder = raw / "Dataset044_Cli"
    first = {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted((folder / "imagesTr").iterdir())}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(argv + ["--force"]) == 0  # the same seed gives the same data
    again = {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted((folder / "imagesTr").iterdir())}
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    assert main(["phantoms", "-d", "45", "-n", "Bad", "--cases", "1", "--unlabeled", "--test-cases", "2",
                 "--raw-root", str(raw)]) == 2
    assert "no held-out cases" in capsys.readouterr().err
    assert main(["phantoms", "-d", "45", "-n", "Bad", "--cases", "1", "--shape", "8", "40", "40",
                 "--raw-root", str(raw)]) == 2
    assert "shape must be" in capsys.readouterr().err
    assert not (raw / "Dataset045_Bad").exists()


@pytest.mark.slow
def test_nnunet_verifies_and_plans_labelled_and_unlabeled_phantom_datasets(tmp_path):
    from nnunet_subfore.commands import nnunet_environment, run_command

    env = nnunet_environment([], root=tmp_path)
    raw = tmp_path / "nnUNet_raw"
    shape = ["24", "40", "40"]
    assert main(["phantoms", "-d", "46", "-n", "PhLab", "--cases", "2", "--test-cases", "1", "--variety", "narrow",
                 "--test-variety", "wide", "--shape", *shape, "--raw-root", str(raw)]) == 0
    assert main(["phantoms", "-d", "47", "-n", "PhPre", "--cases", "3", "--unlabeled", "--shape", *shape,
                 "--raw-root", str(raw)]) == 0
    done = run_command(["nnUNetv2_plan_and_preprocess", "-d", "46", "47", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                        "--verify_dataset_integrity"], env, log=tmp_path / "plan.log")
    assert done.returncode == 0
    for name, low in (("Dataset046_PhLab", -200), ("Dataset047_PhPre", -800)):
        fingerprint = json.loads((tmp_path / "nnUNet_preprocessed" / name / "dataset_fingerprint.json").read_text())
        properties = fingerprint["foreground_intensity_properties_per_channel"]["0"]
        # organ labels: the lower clip is soft tissue; body labels: it lies near air (lungs inside the body)
        assert (properties["percentile_00_5"] > low) == (name.endswith("PhLab")), properties
        assert list((tmp_path / "nnUNet_preprocessed" / name / "nnUNetPlans_3d_fullres").iterdir())
