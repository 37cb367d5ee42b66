"""show-reconstruction: a PNG for CNN and transformer checkpoints through the CLI, refusals in one message."""

from __future__ import annotations

import numpy as np
import pytest

from subfore_test_helpers import ink_on_border, tiny_ct_volume, write_ct, write_trained_run

from nnunet_subfore.cli import main
from nnunet_subfore.reconstruction import Reconstruction
from nnunet_subfore.reporting.reconstruction_figure import slice_point

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_ct(tmp_path_factory.mktemp("image") / "ct.mha", tiny_ct_volume(seed=1))


@pytest.mark.parametrize("trainer_name", ["SubForeCNNPretrainTrainer_demo", "SubForePretrainTrainer_UNETR_demo",
                                          "SubForeRandomMaskPretrainTrainer_demo"])
def test_a_png_for_cnn_and_transformer_checkpoints(trainer_name, image, tmp_path, capsys):
    checkpoint = write_trained_run(tmp_path / "results", trainer_name)
    out = tmp_path / "figures" / "reconstruction.png"
    assert main(["show-reconstruction", str(checkpoint), str(image), "-o", str(out), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "masked L1 " in printed and "masked fraction " in printed and f"wrote {out}" in printed
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000
    assert not ink_on_border(out)


def test_an_existing_png_is_kept_without_force(image, tmp_path, capsys):
    checkpoint = write_trained_run(tmp_path / "results", "SubForeCNNPretrainTrainer_demo")
    out = tmp_path / "reconstruction.png"
    out.write_bytes(b"an earlier figure")
    assert main(["show-reconstruction", str(checkpoint), str(image), "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"an earlier figure"
    assert main(["show-reconstruction", str(checkpoint), str(image), "-o", str(out), "--force"]) == 0
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("case", ["fine-tuning checkpoint", "no plans.json", "no CUDA"])
def test_refusals_are_one_message_and_no_figure(case, image, tmp_path, capsys, monkeypatch):
    trainer = "SubForeCNNTrainer_demo" if case == "fine-tuning checkpoint" else "SubForeCNNPretrainTrainer_demo"
    checkpoint = write_trained_run(tmp_path / "results", trainer)
    argv = ["show-reconstruction", str(checkpoint), str(image), "-o", str(tmp_path / "r.png")]
    if case == "fine-tuning checkpoint":
        expected = [str(checkpoint), "does not pretrain", "SubForeCNNPretrainTrainer"]
    elif case == "no plans.json":
        (checkpoint.parent.parent / "plans.json").unlink()
        expected = [f"No plans.json beside {checkpoint}"]
    else:
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        argv += ["--device", "cuda"]
        expected = ["CUDA is not available", "--device cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(e in err for e in expected) and "Traceback" not in err, err
    assert err.startswith("nnunet-subfore show-reconstruction: error:")
    assert not (tmp_path / "r.png").exists()


def test_the_slices_cross_the_masked_subvolume_nearest_the_centre():
    grid = np.zeros((4, 4, 4), dtype=bool)
    grid[0, 0, 0] = grid[2, 1, 3] = True
    blank = np.zeros((1, 64, 64, 64), dtype=np.float32)
    result = Reconstruction(
        image=blank, masked_input=blank, reconstruction=blank, subvolume_mask=grid, foreground=None, subvolume_size=16,
        offset=(0, 0, 0), spacing=(1.0, 1.0, 1.0), axis_names=("axial", "coronal", "sagittal"), masked_l1=0.0,
        unmasked_l1=0.0, constant_l1=0.0, masked_fraction=2 / 64, trainer_name="T", configuration="3d_fullres",
        checkpoint=None, backbone="cnn", masker="", masking="", seed=0)
    assert slice_point(result) == (40, 24, 56)
    result.subvolume_mask = np.zeros_like(grid)
    assert slice_point(result) == (32, 32, 32)


@pytest.mark.slow
def test_the_demo_s_swinunetr_pretraining_checkpoint_and_fine_tuning_checkpoint(demo_run, tmp_path, capsys):
    """Checkpoints as nnUNetv2_train wrote them (logging with numpy scalars, the fold folder's JSON files): the
    pretraining one is drawn through the console script, the fine-tuning one refused."""
    from subfore_test_helpers import demo_heldout_images, demo_label_efficiency_folds, result_folder, run

    from nnunet_subfore.demo import PRETRAIN_ID, PRETRAIN_NAME, PRETRAINER
    from nnunet_subfore.paths import dataset_folder_name

    workdir, env, _ = demo_run
    pretrain = result_folder(env, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME), PRETRAINER) / "fold_0"
    image = demo_heldout_images(env)[0]
    out = tmp_path / "reconstruction.png"
    done = run(["nnunet-subfore", "show-reconstruction", str(pretrain / "checkpoint_final.pth"), str(image), "-o",
                str(out)], env)
    assert "masked L1 " in done.stdout and "(swinunetr, 3d_fullres)" in done.stdout
    assert out.read_bytes()[:8] == PNG and not ink_on_border(out)
    finetuned = demo_label_efficiency_folds(workdir)[("pretrained", 1)] / "checkpoint_final.pth"
    assert finetuned.is_file()
    assert main(["show-reconstruction", str(finetuned), str(image), "-o", str(tmp_path / "no.png")]) == 2
    assert "does not pretrain" in capsys.readouterr().err and not (tmp_path / "no.png").exists()
