"""Helpers shared by the tests (imported as a module: ``tests/`` is on pytest's ``pythonpath``).

Fixtures live in ``conftest.py``; plain functions live here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_subfore.adaptation_plan import ADAPTATION_PLAN_KEY
from nnunet_subfore.commands import CommandError, nnunet_environment, run_command
from nnunet_subfore.registry import trainer_path

#: Test-only trainer variants, put on nnUNet_extTrainer next to the package's trainers.
TEST_TRAINERS = Path(__file__).parent / "ext_trainers"
#: nnU-Net variables that a test environment sets itself (never inherited from the developer's shell).
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_n_proc_DA")


def clean_environment() -> Dict[str, str]:
    """This process's environment without any nnU-Net variable."""
    import os

    return {k: v for k, v in os.environ.items() if k not in NNUNET_VARIABLES}


def nnunet_test_environment(root: Path) -> Dict[str, str]:
    """An environment for nnU-Net commands with its folders under ``root`` and the SubFore + test trainers found."""
    return nnunet_environment([trainer_path(), TEST_TRAINERS], root=root, base=clean_environment())


def run(command: List[str], env: Dict[str, str], training: bool = False, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run an installed console script; a failure fails the test with the command's output."""
    try:
        return run_command(command, env, training=training, check=check, timeout=timeout)
    except CommandError as e:
        pytest.fail(str(e))


def result_folder(env: Dict[str, str], dataset: str, trainer: str, plans: str = "nnUNetPlans",
                  configuration: str = "3d_fullres") -> Path:
    """nnU-Net's result folder of a run in the environment's ``nnUNet_results``."""
    from nnunet_subfore.paths import trainer_output_folder

    return trainer_output_folder(env["nnUNet_results"], dataset, trainer, plans, configuration)


# ---------------------------------------------------------------------------------------------- a demo run's outputs

def demo_heldout_images(env: Dict[str, str]) -> List[Path]:
    """The held-out images of a demo run's labelled set (in its ``imagesTr``, named by ``subfore_phantoms.json``)."""
    from nnunet_subfore.data.phantoms import heldout_cases
    from nnunet_subfore.demo import DOWNSTREAM_ID, DOWNSTREAM_NAME
    from nnunet_subfore.paths import dataset_folder_name

    raw = Path(env["nnUNet_raw"]) / dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)
    return [raw / "imagesTr" / f"{case}_0000.nii.gz" for case in heldout_cases(raw)]


def heldout_input_folder(env: Dict[str, str], folder: Path) -> Path:
    """``folder`` with links to :func:`demo_heldout_images`: an ``nnUNetv2_predict -i`` folder of the held-out cases."""
    folder.mkdir(parents=True)
    for image in demo_heldout_images(env):
        (folder / image.name).symlink_to(image)
    return folder


def demo_label_efficiency_folds(workdir: Path) -> Dict[Tuple[str, int], Path]:
    """``{(arm, labelled cases): fold folder}`` of the demo's label-efficiency runs (``label_efficiency.json``)."""
    from nnunet_subfore.demo import DOWNSTREAM_ID, DOWNSTREAM_NAME, LABEL_EFFICIENCY_FOLDER
    from nnunet_subfore.paths import dataset_folder_name, trainer_output_folder

    output = Path(workdir) / LABEL_EFFICIENCY_FOLDER
    record = json.loads((output / "label_efficiency.json").read_text())
    dataset = dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)
    return {(r["arm"], r["labelled_cases"]): trainer_output_folder(output / "results" / r["arm"], dataset, r["trainer"],
                                                                   record["plans"], "3d_fullres") / f"fold_{r['fold']}"
            for r in record["runs"]}


# ---------------------------------------------------------------------------------------------- image files

def write_dicom_series(volume: sitk.Image, folder: Path, series_uid: str) -> None:
    """One DICOM file per axial slice (``IM0000``, ...) with the position/orientation tags ITK needs to restack them."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    d = volume.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": series_uid + ".1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 100}",
            "0020|0013": str(k + 1),
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": str(volume.GetSpacing()[2]),
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}"))
        writer.Execute(slice_)


def tree_digest(root: Path) -> Dict[str, str]:
    """``{relative path: md5}`` of every file under ``root`` (to show that a folder was left untouched)."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- fake public datasets
# Tiny trees in the layouts that the public downloads unpack to (tests of nnunet_subfore.data.converters).

FAKE_SHAPE = (8, 8, 8)
FAKE_SPACING = (0.8, 0.8, 2.5)
FAKE_ORIGIN = (-10.0, 20.0, 5.0)
#: MM-WHS's published label codes (its label files store these intensities, as floats).
MMWHS_CODES = [205, 420, 500, 550, 600, 820, 850]
#: Where the AMOS builder puts its cases: (number, dataset.json key, image folder, label folder); 540 is an MRI scan.
AMOS_CASES = (
    (1, "training", "imagesTr", "labelsTr"), (4, "training", "imagesTr", "labelsTr"),
    (5, "training", "imagesTr", "labelsTr"), (6, "training", "imagesTr", "labelsTr"),
    (540, "training", "imagesTr", "labelsTr"),
    (8, "validation", "imagesVa", "labelsVa"), (13, "validation", "imagesVa", "labelsVa"),
)
LUNA16_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.{}"


def fake_ct(seed: int) -> np.ndarray:
    """Air around a soft-tissue block, in HU (int16), numpy order (z, y, x), of :data:`FAKE_SHAPE`."""
    rng = np.random.default_rng(seed)
    hu = np.full(FAKE_SHAPE, -1000, dtype=np.int16)
    hu[1:7, 1:7, 1:7] = rng.integers(-100, 200, size=(6, 6, 6))
    return hu


def fake_label(values: Sequence[int], seed: int, dtype=np.uint8) -> np.ndarray:
    """Each of ``values`` present at least once (one voxel each), background elsewhere."""
    rng = np.random.default_rng(seed)
    label = np.zeros(FAKE_SHAPE, dtype=dtype)
    flat = label.reshape(-1)
    positions = rng.choice(flat.size, size=len(values), replace=False)
    flat[positions] = values
    return label


def write_image(path: Path, array: np.ndarray, spacing=FAKE_SPACING, origin=FAKE_ORIGIN, compress=True) -> Path:
    """Write ``array`` (numpy order; a leading 4th axis makes a 4D image) with SimpleITK; parents are created."""
    image = sitk.GetImageFromArray(array, isVector=False)
    dim = image.GetDimension()
    image.SetSpacing(tuple(spacing) + (1.0,) * (dim - len(spacing)))
    image.SetOrigin(tuple(origin) + (0.0,) * (dim - len(origin)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), compress)
    return path


def read_array(path: Path) -> np.ndarray:
    """The voxels of an image file, numpy order."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


class _ThreadPoolContext:
    """Stands in for ``multiprocessing.get_context("spawn")``: same checks, threads instead of fresh
    interpreters (each spawned worker re-imports torch and nnU-Net: ~2.5 s per call on 2 cores)."""

    @staticmethod
    def Pool(processes=None):
        from multiprocessing.pool import ThreadPool

        return ThreadPool(processes)


def verify_nnunet_dataset(folder: Path, in_process: bool = True) -> None:
    """nnU-Net's own integrity check (what ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs).

    Args:
        folder: the raw dataset folder.
        in_process: run nnU-Net's workers as threads (fast); False: in spawned processes, as nnU-Net runs them.
    """
    import multiprocessing
    from unittest import mock

    from nnunetv2.experiment_planning import verify_dataset_integrity as module

    if not in_process:
        module.verify_dataset_integrity(str(folder), num_processes=1)
        return
    shim = mock.Mock(wraps=multiprocessing, get_context=lambda method=None: _ThreadPoolContext)
    with mock.patch.object(module, "multiprocessing", shim):
        module.verify_dataset_integrity(str(folder), num_processes=1)


def make_btcv(root: Path, n: int = 6) -> Path:
    """Synapse RawData layout: Training/img/img0001.nii.gz + Training/label/label0001.nii.gz (labels 1..13),
    and one unlabelled Testing/img/img0061.nii.gz."""
    values = list(range(1, 14))
    for k in range(1, n + 1):
        write_image(root / "Training" / "img" / f"img{k:04d}.nii.gz", fake_ct(k))
        write_image(root / "Training" / "label" / f"label{k:04d}.nii.gz", fake_label(values, k))
    write_image(root / "Testing" / "img" / "img0061.nii.gz", fake_ct(61))
    return root


def make_flare22(root: Path, n: int = 3) -> Path:
    """FLARE22 training layout: images/FLARE22_Tr_0001_0000.nii.gz + labels/FLARE22_Tr_0001.nii.gz (labels 1..13)."""
    for k in range(1, n + 1):
        write_image(root / "images" / f"FLARE22_Tr_{k:04d}_0000.nii.gz", fake_ct(k))
        write_image(root / "labels" / f"FLARE22_Tr_{k:04d}.nii.gz", fake_label(list(range(1, 14)), k))
    return root


def make_mmwhs(root: Path, n: int = 3) -> Path:
    """MM-WHS CT layout: ct_train/ct_train_1001_image.nii.gz + ..._label.nii.gz (float labels, :data:`MMWHS_CODES`)."""
    for k in range(1001, 1001 + n):
        write_image(root / "ct_train" / f"ct_train_{k}_image.nii.gz", fake_ct(k))
        write_image(root / "ct_train" / f"ct_train_{k}_label.nii.gz", fake_label(MMWHS_CODES, k, dtype=np.float32))
    return root


def make_amos(root: Path) -> Path:
    """Post-challenge AMOS: dataset.json with training/validation/test, imagesTr/Va/Ts, labelsTr/Va
    (cases :data:`AMOS_CASES`, labels 1..15; test image amos_0002)."""
    from nnunet_subfore.data.converters import AMOS_LABELS

    meta = {"name": "AMOS", "labels": {str(v): k for k, v in AMOS_LABELS.items()},
            "training": [], "validation": [], "test": []}
    for ident, key, images, labels in AMOS_CASES:
        name = f"amos_{ident:04d}.nii.gz"
        write_image(root / images / name, fake_ct(ident))
        write_image(root / labels / name, fake_label(list(range(1, 16)), ident))
        meta[key].append({"image": f"./{images}/{name}", "label": f"./{labels}/{name}"})
    write_image(root / "imagesTs" / "amos_0002.nii.gz", fake_ct(2))
    meta["test"].append({"image": "./imagesTs/amos_0002.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_brats(root: Path, n: int = 3) -> Path:
    """MSD Task01_BrainTumour: 4D images (4 MRI channels), 3D labels (1..3), dataset.json with modality, one
    test image BRATS_010 and a macOS ``._BRATS_001.nii.gz`` next to the images."""
    from nnunet_subfore.data.converters import BRATS_CHANNELS

    meta = {"name": "BRATS", "modality": dict(BRATS_CHANNELS),
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "numTraining": n, "numTest": 1, "training": [], "test": ["./imagesTs/BRATS_010.nii.gz"]}
    rng = np.random.default_rng(0)
    for k in range(1, n + 1):
        name = f"BRATS_{k:03d}.nii.gz"
        write_image(root / "imagesTr" / name, rng.normal(size=(4,) + FAKE_SHAPE).astype(np.float32),
                    spacing=(1, 1, 1), origin=(0, 0, 0))
        write_image(root / "labelsTr" / name, fake_label([1, 2, 3], k), spacing=(1, 1, 1), origin=(0, 0, 0))
        meta["training"].append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    write_image(root / "imagesTs" / "BRATS_010.nii.gz", rng.normal(size=(4,) + FAKE_SHAPE).astype(np.float32),
                spacing=(1, 1, 1), origin=(0, 0, 0))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork, not an image")
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_luna16(root: Path) -> Path:
    """LUNA16: subset0/ (UIDs ...101, ...102), subset1/ (...103, ...104 whose .raw is missing), a lung mask
    in seg-lungs-LUNA16/ (same .mhd format) and annotations.csv (:data:`LUNA16_UID`)."""
    for subset, ids in (("subset0", (101, 102)), ("subset1", (103, 104))):
        for k in ids:
            write_image(root / subset / f"{LUNA16_UID.format(k)}.mhd", fake_ct(k), compress=False)
    (root / "subset1" / f"{LUNA16_UID.format(104)}.raw").unlink()
    write_image(root / "seg-lungs-LUNA16" / f"{LUNA16_UID.format(101)}.mhd", fake_label([3, 4], 1), compress=False)
    (root / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    return root


# ---------------------------------------------------------------------------------------------- pictures

def ink_on_border(png: Path, border: int = 2) -> bool:
    """True when anything is drawn on the outermost ``border`` pixels of a PNG: a title, legend or label cut by the
    canvas leaves ink there (the package's figures keep a white margin around everything they draw)."""
    from matplotlib.image import imread

    image = imread(str(png))[..., :3]
    edges = (image[:border], image[-border:], image[:, :border], image[:, -border:])
    return any(bool((edge < 0.97).any()) for edge in edges)


def masked_l1_trained_and_fresh(trainer, network_weights, fresh_networks: int = 3) -> Tuple[float, float]:
    """The pretraining trainer's masked L1 on fixed centre patches of every preprocessed case, with fixed masks:
    (with ``network_weights``, mean over ``fresh_networks`` freshly initialized networks). Lower is a better
    reconstruction.

    Per-epoch training losses of a tiny network swing too much to show learning in a few epochs; the same
    patches and masks scored with trained and untrained weights do.
    """
    import numpy as np
    import torch

    from nnunet_subfore.crops import center_crop

    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, None)
    patch = [int(p) for p in trainer.configuration_manager.patch_size]
    x = torch.stack([torch.from_numpy(center_crop(np.asarray(dataset.load_case(k)[0]), patch)[0])
                     for k in sorted(dataset.identifiers)])

    def fixed_loss(network):
        trainer.network = network.eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return float(np.mean([float(trainer._masked_loss(x, generator=generator)[0]) for _ in range(8)]))

    def fresh_network(seed):
        torch.manual_seed(seed)
        return trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 1, False)

    untrained = float(np.mean([fixed_loss(fresh_network(seed)) for seed in range(fresh_networks)]))
    trained_network = fresh_network(0)
    trained_network.load_state_dict(network_weights)
    return fixed_loss(trained_network), untrained


# ---------------------------------------------------------------------------------------------- tiny trained runs
# A pretraining (or fine-tuning) result folder as nnU-Net leaves it, without training: the network its trainer
# builds from tiny plans, saved as checkpoint_final.pth beside plans.json and dataset.json.

#: The CT normalization of :func:`tiny_ct_plans` (body-labelled CT: the lower clip near air), in HU.
TINY_CT_NORMALIZATION = {"mean": -140.0, "std": 260.0, "percentile_00_5": -980.0, "percentile_99_5": 1200.0}
#: A 3-stage PlainConvUNet (8-16-32 features, one convolution per stage): total stride 4.
TINY_PLAIN_ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": dict(n_stages=3, features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3, 3]] * 3,
                        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1] * 3,
                        n_conv_per_stage_decoder=[1] * 2, conv_op="torch.nn.modules.conv.Conv3d", conv_bias=True,
                        norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                        norm_op_kwargs={"eps": 1e-05, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                        nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True}),
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def tiny_ct_plans(spacing=(2.0, 2.0, 2.0), patch=(32, 32, 32), transpose=(0, 1, 2)) -> dict:
    """Complete nnU-Net plans (what DefaultPreprocessor and the network builders read) for 1-channel CT."""
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset990_TinyCT", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [48, 64, 64],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose),
        "transpose_backward": [list(transpose).index(i) for i in range(3)],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(TINY_CT_NORMALIZATION, median=-100.0, min=-1000.0,
                                                                  max=1500.0)},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": [48, 64, 64], "spacing": list(spacing),
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": resampling, "resampling_fn_seg": resampling, "resampling_fn_probabilities": resampling,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": json.loads(json.dumps(TINY_PLAIN_ARCH)), "batch_dice": False,
        }},
    }


#: dataset.json of :func:`tiny_ct_plans`' dataset: one CT channel, three organ labels.
TINY_CT_DATASET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3},
                   "numTraining": 4, "file_ending": ".nii.gz"}


def write_trained_run(results: Path, trainer_name: str, plans: dict = None, dataset_json: dict = None, seed: int = 0,
                      weights_of: str = None) -> Path:
    """``results/Dataset990_TinyCT/TRAINER__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth`` (with plans.json
    and dataset.json one level up), the network ``trainer_name`` builds from the plans with seeded initial weights
    (``weights_of``: another trainer's network under ``trainer_name``'s name). Returns the checkpoint path."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_subfore.registry import find_trainer_class

    plans = tiny_ct_plans() if plans is None else plans
    dataset_json = TINY_CT_DATASET if dataset_json is None else dataset_json
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    channels = determine_num_input_channels(manager, config, dataset_json)
    torch.manual_seed(seed)
    network = find_trainer_class(weights_of or trainer_name).build_network_architecture(
        manager, config, channels, manager.get_label_manager(dataset_json).num_segmentation_heads, False)
    folder = result_folder({"nnUNet_results": str(results)}, plans["dataset_name"], trainer_name, plans["plans_name"])
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": trainer_name, "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json,
                              "device": "cpu"}}, checkpoint)
    return checkpoint


def tiny_ct_volume(shape=(48, 64, 64), seed: int = 0) -> np.ndarray:
    """HU, (z, y, x): air around an elliptic body of soft tissue with a fat rim, a bright bone rod and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt((y / 0.8) ** 2 + (x / 0.9) ** 2)
    hu = np.where(r < 1.0, -100.0, -1000.0)
    hu = np.where(r < 0.85, 40.0, hu)
    hu = np.where(((y - 0.4) ** 2 + x ** 2) < 0.02, 700.0, hu)
    hu = np.where((r < 0.85) & (z > 0.3) & (x < 0), 90.0, hu)
    return (hu + rng.normal(0.0, 15.0, shape)).astype(np.float32)


def write_ct(path: Path, hu: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> Path:
    """``hu`` (z, y, x) as an image file with (z, y, x) ``spacing`` (SimpleITK writes the suffix's format)."""
    return write_image(path, hu, spacing=tuple(reversed(spacing)), origin=(0.0, 0.0, 0.0))


# ------------------------------------------------------------------------------------------------ nnssl format
#: A ResidualEncoderUNet with ResEnc-L's layout scaled down (3 stages, 4-8-16 features, blocks 1-2-2).
TINY_RESENC_KWARGS = dict(
    n_stages=3, features_per_stage=[4, 8, 16], conv_op="torch.nn.modules.conv.Conv3d", kernel_sizes=[[3, 3, 3]] * 3,
    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 2, 2], n_conv_per_stage_decoder=[1, 1],
    conv_bias=True, norm_op="torch.nn.modules.instancenorm.InstanceNorm3d", norm_op_kwargs={"eps": 1e-05, "affine": True},
    dropout_op=None, dropout_op_kwargs=None, nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True})
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def build(class_name, kwargs, in_ch, out_ch, seed=0):
    """nnU-Net's builder for a plans' architecture (initialized as nnU-Net initializes it, seeded)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    torch.manual_seed(seed)
    return get_network_from_plans(class_name, kwargs, REQUIRES_IMPORT, in_ch, out_ch, allow_init=True,
                                  deep_supervision=False)


def nnssl_checkpoint(path, network, arch_class_name="ResidualEncoderUNet", arch_kwargs=None, spacing=(1.0, 1.0, 1.0),
                     pretrain_patch=(32, 32, 32), recommended=(32, 32, 32), weights=None):
    """An nnssl-format checkpoint (DESIGN.md 6.1): the network's full state dict (aliases included), the
    adaptation plan with nnssl's fields, citations; plain values only."""
    plan = {
        "architecture_plans": {"arch_class_name": arch_class_name, "arch_kwargs": arch_kwargs,
                               "arch_kwargs_requiring_import": REQUIRES_IMPORT if arch_kwargs else None},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                          "configurations": {"onemmiso": {"spacing": list(spacing), "patch_size": list(pretrain_patch),
                                                          "normalization_schemes": ["ZScoreNormalization"]}}},
        "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": list(recommended),
        "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"], "key_to_lpe": None,
    }
    torch.save({"network_weights": network.state_dict() if weights is None else weights, ADAPTATION_PLAN_KEY: plan,
                "citations": [{"type": "pretraining", "name": "test", "apa_citations": ["A paper."]}]}, path)
    return path
