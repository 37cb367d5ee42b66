"""Claiming a raw dataset folder: --force never leaves a half dataset, and killed runs are cleaned up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_subfore.data import staging
from nnunet_subfore.data.staging import DatasetStaging


@pytest.fixture(autouse=True)
def _no_nnunet_folders(monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)


def write_dataset(root: Path, content: str, force: bool = False) -> Path:
    with DatasetStaging(root, 5, "Stage", force=force) as st:
        (st.path / "imagesTr").mkdir()
        (st.path / "imagesTr" / "case_0000.nii.gz").write_text(content)
        (st.path / "dataset.json").write_text(content)
        return st.commit()


def content(dataset: Path) -> set:
    return {(dataset / "dataset.json").read_text(), (dataset / "imagesTr" / "case_0000.nii.gz").read_text()}


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_force_replaces_the_dataset_and_leaves_no_work_folder(tmp_path):
    dataset = write_dataset(tmp_path, "old")
    write_dataset(tmp_path, "new", force=True)
    assert content(dataset) == {"new"} and [p.name for p in tmp_path.iterdir()] == [dataset.name]


def test_a_failure_after_the_swap_leaves_the_new_dataset_whole(tmp_path, monkeypatch):
    dataset = write_dataset(tmp_path, "old")
    monkeypatch.setattr(staging.shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, "new", force=True)
    assert content(dataset) == {"new"}


@pytest.mark.parametrize("exchange", [True, False])
def test_a_run_killed_inside_commit_leaves_a_whole_dataset_and_the_next_claim_cleans_up(tmp_path, monkeypatch,
                                                                                      capsys, exchange):
    """Killed after the old dataset was moved aside (no atomic exchange) or after the swap: the next claim
    finds the dead run's work folder, restores the old dataset if nothing took its place, removes the folder."""
    dataset = write_dataset(tmp_path, "old")
    renames = []
    real_rename = Path.rename

    def rename_then_die(self, target):
        renames.append(target)
        if len(renames) == 2:  # the second rename: staged -> destination
            raise KeyboardInterrupt("killed")
        return real_rename(self, target)

    monkeypatch.setattr(DatasetStaging, "__exit__", lambda self, *exc: None)  # killed: no clean-up runs
    if exchange:  # killed right after the swap, before the old dataset was deleted
        write_dataset(tmp_path, "new", force=True)
    else:  # killed between moving the old dataset aside and moving the new one in
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
        monkeypatch.setattr(Path, "rename", rename_then_die)
        with pytest.raises(KeyboardInterrupt):
            write_dataset(tmp_path, "new", force=True)
    monkeypatch.undo()
    (work,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    if exchange:
        assert content(dataset) == {"new"}  # the swap happened; the old dataset waits in the work folder
    else:
        assert not dataset.exists() and content(work / "replaced") == {"old"}
    # the run is dead: give its work folder a dead process id
    prefix, _, suffix = work.name.rpartition(".partial-")
    work.rename(tmp_path / f"{prefix}.partial-{dead_pid()}-{suffix.split('-')[1]}")
    DatasetStaging(tmp_path, 5, "Stage", force=True)
    out = capsys.readouterr().out
    assert "interrupted run" in out
    assert content(dataset) == ({"new"} if exchange else {"old"})
    assert ("Restored" in out) == (not exchange)
    assert [p.name for p in tmp_path.iterdir()] == [dataset.name]


def test_work_folders_of_live_runs_are_left_alone(tmp_path):
    write_dataset(tmp_path, "old")
    live = tmp_path / f".Dataset005_Stage.partial-{1}-abcdef12"  # pid 1 is always alive
    live.mkdir()
    DatasetStaging(tmp_path, 5, "Stage", force=True)
    assert live.is_dir()


def test_an_error_after_the_old_dataset_was_moved_aside_puts_it_back(tmp_path, monkeypatch):
    """Without an atomic exchange: the staged folder cannot be moved in; the old dataset returns at once."""
    dataset = write_dataset(tmp_path, "old")
    real_rename, calls = Path.rename, []

    def fail_second(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk trouble")
        return real_rename(self, target)

    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    monkeypatch.setattr(Path, "rename", fail_second)
    with pytest.raises(OSError, match="disk trouble"):
        write_dataset(tmp_path, "new", force=True)
    monkeypatch.undo()
    assert content(dataset) == {"old"} and [p.name for p in tmp_path.iterdir()] == [dataset.name]
