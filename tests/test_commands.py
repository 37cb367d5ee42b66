"""The command runner: the environment nnU-Net commands get, running a console script, failures with their output."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from subfore_test_helpers import clean_environment

from nnunet_subfore.commands import CommandError, console_script, nnunet_environment, run_command
from nnunet_subfore.errors import UserError
from nnunet_subfore.registry import trainer_path

PRINT_N_PROC_DA = "import os; print(os.environ.get('nnUNet_n_proc_DA'))"


def test_environment_puts_the_folders_under_root(tmp_path):
    base = {"PATH": "/usr/bin", "nnUNet_raw": "/mine/raw", "nnUNet_n_proc_DA": "4"}
    env = nnunet_environment(["/trainers"], root=tmp_path, base=base)
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")  # a set folder is replaced without keep_set_folders
    assert env["nnUNet_preprocessed"] == str(tmp_path / "nnUNet_preprocessed")
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert "nnUNet_n_proc_DA" not in env  # set per command, by run_command(training=True)
    assert env["PATH"] == "/usr/bin" and env["nnUNet_extTrainer"] == "/trainers"
    assert env["nnUNet_def_n_proc"] == "1" and env["MPLBACKEND"] == "Agg"
    assert base == {"PATH": "/usr/bin", "nnUNet_raw": "/mine/raw", "nnUNet_n_proc_DA": "4"}  # not modified


def test_keep_set_folders_honours_the_users_folders(tmp_path):
    base = {"nnUNet_raw": "/mine/raw", "nnUNet_results": ""}  # an empty variable counts as unset
    env = nnunet_environment([], root=tmp_path, keep_set_folders=True, base=base)
    assert env["nnUNet_raw"] == "/mine/raw"
    assert env["nnUNet_preprocessed"] == str(tmp_path / "nnUNet_preprocessed")
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")


def test_without_root_the_folders_stay_as_they_are():
    env = nnunet_environment([], base={"nnUNet_raw": "/mine/raw", "nnUNet_def_n_proc": "3", "MPLBACKEND": "pdf"})
    assert env["nnUNet_raw"] == "/mine/raw"
    assert "nnUNet_preprocessed" not in env and "nnUNet_results" not in env
    assert env["nnUNet_def_n_proc"] == "3" and env["MPLBACKEND"] == "pdf"  # a user's settings win
    assert env["nnUNet_extTrainer"] == ""


def test_trainer_folders_come_first_without_duplicates(tmp_path):
    base = {"nnUNet_extTrainer": os.pathsep.join(["/b", "/old", "", "/a", "/old"])}
    env = nnunet_environment(["/a", Path("/b"), "/a"], base=base)
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/a", "/b", "/old"]


def test_base_defaults_to_this_process(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/from/the/shell")
    monkeypatch.setenv("nnUNet_n_proc_DA", "6")
    monkeypatch.setenv("SUBFORE_TEST_MARKER", "x")
    env = nnunet_environment(["/mine"])
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/mine", "/from/the/shell"]
    assert env["SUBFORE_TEST_MARKER"] == "x" and "nnUNet_n_proc_DA" not in env
    assert os.environ["nnUNet_n_proc_DA"] == "6"  # this process's environment is left alone


@pytest.fixture
def env(tmp_path):
    return nnunet_environment([], root=tmp_path / "nnunet", base=clean_environment())


def test_run_command_captures_the_output(env):
    done = run_command(["nnunet-subfore", "trainer-path"], env)
    assert done.returncode == 0 and done.stdout.strip() == str(trainer_path())


def test_run_command_writes_the_command_line_first_into_the_log(env, tmp_path):
    log = tmp_path / "logs" / "deeper" / "trainer-path.log"
    done = run_command(["nnunet-subfore", "trainer-path"], env, log=log)
    assert done.returncode == 0
    assert log.read_text().splitlines() == ["nnunet-subfore trainer-path", "", str(trainer_path())]


def test_failing_command_raises_with_log_and_output(env, tmp_path):
    log = tmp_path / "logs" / "bad.log"
    with pytest.raises(CommandError) as error:
        run_command(["nnunet-subfore", "no-such-command"], env, log=log)
    message = str(error.value)
    assert message.startswith(f"`nnunet-subfore no-such-command` failed (exit 2); log: {log}\n")
    assert "invalid choice: 'no-such-command'" in message  # argparse's complaint, from the log
    assert log.read_text().startswith("nnunet-subfore no-such-command\n\n")
    assert isinstance(error.value, UserError)

    with pytest.raises(CommandError, match="invalid choice") as error:  # without a log: the captured stderr
        run_command(["nnunet-subfore", "no-such-command"], env)
    assert "log:" not in str(error.value)
    done = run_command(["nnunet-subfore", "no-such-command"], env, check=False)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_failure_message_keeps_the_last_25_lines(env):
    # `python` lies next to sys.executable, where console_script looks first
    code = "import sys\nfor k in range(40): print(f'out{k:02d}')\nsys.exit(3)"
    with pytest.raises(CommandError) as error:
        run_command(["python", "-c", code], env)
    message = str(error.value)
    assert "failed (exit 3)" in message
    assert "out15" in message and "out39" in message and "out14" not in message


def test_training_sets_in_process_data_loading_in_the_child(env):
    assert run_command(["python", "-c", PRINT_N_PROC_DA], env, training=True).stdout.strip() == "0"
    assert run_command(["python", "-c", PRINT_N_PROC_DA], env).stdout.strip() == "None"
    assert "nnUNet_n_proc_DA" not in env  # the caller's environment is not modified


def _script(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_console_script_finds_nnunet_subfore():
    path = Path(console_script("nnunet-subfore"))
    assert path.name == "nnunet-subfore" and path.is_file() and os.access(path, os.X_OK)


def test_console_script_looks_next_to_python_first_then_on_path(tmp_path, monkeypatch):
    beside = _script(tmp_path / "venv" / "bin", "some-tool")
    _script(tmp_path / "elsewhere", "some-tool")  # also on PATH: the one next to python wins
    only_on_path = _script(tmp_path / "elsewhere", "other-tool")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert console_script("some-tool") == str(beside)
    assert console_script("other-tool") == str(only_on_path)
    with pytest.raises(UserError, match="`missing-tool` not found next to .*venv/bin/python nor on PATH"):
        console_script("missing-tool")
