import json
import subprocess
from pathlib import Path

import pytest
import torch

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
    done = subprocess.run([console_script("nnunet-subfore"), "trainer-path"], capture_output=True, encoding="utf-8", errors="replace")
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

    def settings(trainer):
        recipe = trainer.optimizer_recipe()
        return recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.schedule, recipe.warmup(1000)

    assert settings(SubForePretrainTrainer) == ("adamw", 8e-4, 0.05, "cosine", 50)
    assert settings(SubForePretrainTrainer_UNETR) == ("adamw", 1e-4, 0.05, "cosine", 50)
    assert settings(SubForeSwinUNETRTrainer) == ("adamw", 1e-3, 1e-5, "cosine", 50)
    assert settings(SubForeUNETRTrainer) == ("adamw", 3e-4, 1e-5, "cosine", 50)
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


def test_demo_workdir_that_cannot_be_created_is_one_message(tmp_path, capsys, monkeypatch):
    """Under a regular file, or a regular file itself: exit 2, one message naming the path and the fix, no traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    done = subprocess.run([console_script("nnunet-subfore"), "demo", "--workdir", str(a_file / "demo")],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"Cannot create {a_file / 'demo'} (Not a directory): pass --workdir a folder you can write to" in done.stderr
    assert main(["demo", "--workdir", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setenv("nnUNet_results", str(a_file / "results"))  # the user's nnU-Net folder is the bad one
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert f"Cannot create {a_file / 'results'}" in err and "set nnUNet_results to a folder you can write to" in err
    assert a_file.read_text() == "precious"


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


@pytest.fixture
def plans_tree(tmp_path, monkeypatch):
    """A preprocessed folder with one dataset's nnUNetPlans.json (enough for `plans` and `adapt-checkpoint`)."""
    pre = tmp_path / "pre"
    (pre / "Dataset601_CT").mkdir(parents=True)
    plans = {"plans_name": "nnUNetPlans", "dataset_name": "Dataset601_CT",
             "configurations": {"3d_fullres": {"patch_size": [64, 64, 64], "normalization_schemes": ["CTNormalization"]}},
             "foreground_intensity_properties_per_channel": {"0": {"mean": 0, "std": 1, "percentile_00_5": -1000,
                                                                    "percentile_99_5": 1000}}}
    (pre / "Dataset601_CT" / "nnUNetPlans.json").write_text(json.dumps(plans))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    return pre


def a_checkpoint(path: Path) -> Path:
    torch.save({"network_weights": {"w": torch.zeros(1)}}, path)
    return path


@pytest.mark.parametrize("case", ["raw root is a file", "plans not JSON", "output is a folder", "summary -o is a file",
                                  "plans name leaves the folder", "plans name with __", "figure exists"])
def test_bad_input_ends_in_one_message_with_status_2(case, tmp_path, plans_tree, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    if case == "raw root is a file":
        ct = tmp_path / "ct"
        ct.mkdir()
        argv, expected = ["register-unlabeled", str(ct), "-d", "5", "-n", "X", "--raw-root", str(a_file)], "is a file"
    elif case == "plans not JSON":
        argv = ["adapt-checkpoint", str(a_checkpoint(tmp_path / "c.pth")), "--plans", str(a_file), "-tr",
                "SubForeSwinUNETRTrainer", "--num-input-channels", "1", "-o", str(tmp_path / "o.pth")]
        expected = "is not a JSON file"
    elif case == "output is a folder":
        argv = ["adapt-checkpoint", str(a_checkpoint(tmp_path / "c.pth")), "--plans",
                str(plans_tree / "Dataset601_CT" / "nnUNetPlans.json"), "-tr", "SubForeSwinUNETRTrainer",
                "--num-input-channels", "1", "-o", str(tmp_path), "--force"]
        expected = "is a folder"
    elif case == "summary -o is a file":
        results = tmp_path / "results" / "Dataset601_CT" / "T__nnUNetPlans__3d_fullres" / "fold_0" / "validation"
        results.mkdir(parents=True)
        (results / "summary.json").write_text(json.dumps({"mean": {"1": {"Dice": 0.5}}}))
        monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
        argv, expected = ["summarize", "-d", "601", "-tr", "T", "-f", "0", "-o", str(a_file)], "is a file"
    elif case == "plans name leaves the folder":
        argv, expected = ["plans", "-d", "601", "--plans-name", "../../x"], "is not a plans name"
    elif case == "plans name with __":
        argv, expected = ["plans", "-d", "601", "--plans-name", "My__Plans"], "is not a plans name"
    else:
        figure = tmp_path / "figure.png"
        figure.write_bytes(b"an earlier figure")
        before[figure] = figure.read_bytes()
        argv, expected = ["show-masking", str(a_file), "-o", str(figure)], "exists; pass --force"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert {p: p.read_bytes() for p in before} == before  # nothing overwritten
    assert not list(tmp_path.parent.glob("x.json")) and not (tmp_path / "pre" / "x.json").exists()
