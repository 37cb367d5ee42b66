import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_subfore.cli import main
from nnunet_subfore.registry import trainer_path
from nnunet_subfore.commands import console_script

SHIPPED = [
    "SubForePretrainTrainer", "SubForePretrainTrainer_UNETR", "SubForeRandomMaskPretrainTrainer",
    "SubForeRandomMaskPretrainTrainer_UNETR", "SubForeSwinUNETRTrainer", "SubForeUNETRTrainer",
    "SubForeSwinUNETRTrainer_scratch", "SubForeUNETRTrainer_scratch", "SubForePretrainTrainer_demo",
    "SubForeSwinUNETRTrainer_demo", "SubForeSwinUNETRTrainer_demo_scratch", "SubForeUNETRTrainer_demo",
]


def test_trainer_path_is_the_folder_nnunet_scans():
    done = subprocess.run([console_script("nnunet-subfore"), "trainer-path"], capture_output=True, text=True)
    assert done.returncode == 0
    folder = Path(done.stdout.strip())
    assert folder == trainer_path() and (folder / "subfore_pretrain.py").is_file()


def test_nnunet_finds_every_shipped_trainer(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_path()))
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in SHIPPED:
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name and issubclass(cls, nnUNetTrainer)


def test_paper_settings_of_the_shipped_trainers():
    from nnunet_subfore.networks import PAPER_ARCHITECTURES
    from nnunet_subfore.trainers.subfore_finetune import SubForeSwinUNETRTrainer, SubForeUNETRTrainer
    from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer, SubForePretrainTrainer_UNETR

    assert (SubForePretrainTrainer.base_lr, SubForePretrainTrainer.base_weight_decay) == (8e-4, 0.05)
    assert SubForePretrainTrainer_UNETR.base_lr == 1e-4
    assert (SubForeSwinUNETRTrainer.base_lr, SubForeSwinUNETRTrainer.base_weight_decay) == (1e-3, 1e-5)
    assert SubForeUNETRTrainer.base_lr == 3e-4
    for trainer in (SubForePretrainTrainer, SubForeSwinUNETRTrainer):
        assert trainer.architecture is None and trainer.patch_size is None and trainer.epochs is None
    assert PAPER_ARCHITECTURES["swinunetr"]["feature_size"] == 48 and PAPER_ARCHITECTURES["swinunetr"]["use_v2"]
    recipe = SubForePretrainTrainer.masking
    assert (recipe.ratio, recipe.subvolume_size, recipe.selection, recipe.fill) == (0.6, 16, "bernoulli", "noise")
    assert (recipe.window, recipe.threshold) == ((-175.0, 250.0), 0.1)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "my_results.txt").write_text("precious")
    assert main(["demo", "--workdir", str(tmp_path), "--force"]) == 2
    assert "not empty and was not made by the demo" in capsys.readouterr().err
    assert (tmp_path / "my_results.txt").read_text() == "precious"


def test_user_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["adapt-checkpoint", str(tmp_path / "missing.pth"), "--plans", str(tmp_path / "p.json"),
                 "-tr", "SubForeSwinUNETRTrainer", "--num-input-channels", "1", "-o", str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert "missing.pth does not exist" in err and "Traceback" not in err


def test_pretrained_weights_are_read_from_argv_like_nnunet_reads_them():
    from nnunet_subfore.trainers.subfore_finetune import pretrained_weights_from_argv as read

    assert read(["602", "3d_fullres", "0", "-tr", "T", "-p", "SubForePlans", "-device", "cpu"]) is None
    assert str(read(["602", "3d_fullres", "0", "-p", "P", "-pretrained_weights", "/w/final.pth"])) == "/w/final.pth"
    assert str(read(["602", "3d_fullres", "0", "-pretrained_weights", "/w/final.pth", "-p", "P"])) == "/w/final.pth"
