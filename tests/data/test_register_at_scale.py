"""register-unlabeled at scale (issue 19, item 1): -np N gives the dataset -np 1 gives, a SIGKILL part-way and the
same command again complete the dataset with every case once, the fingerprint store is filled during registration
(check-overlap then reads no registered image), and an unfinished run with other inputs is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_subfore.data import fingerprint_store
from nnunet_subfore.data.fingerprint_store import FingerprintStore
from nnunet_subfore.data.fingerprints import file_fingerprint
from nnunet_subfore.data.overlap import check_overlap
from nnunet_subfore.data.phantoms import make_phantom, to_sitk
from nnunet_subfore.data.register import REGISTRATION_FILE, register_unlabeled
from nnunet_subfore.errors import UserError

N_VOLUMES = 24


@pytest.fixture(autouse=True)
def _no_nnunet_folders(monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """24 CT volumes (64 x 96 x 96) and one that is not CT."""
    folder = tmp_path_factory.mktemp("scans")
    for i in range(N_VOLUMES):
        image, _, spacing = make_phantom(300 + i, (64, 96, 96))
        sitk.WriteImage(to_sitk(image, spacing), str(folder / f"scan_{i:02d}.nii.gz"), True)
    sitk.WriteImage(to_sitk(np.full((8, 32, 32), 0.5, np.float32), (1.0, 1.0, 1.0)), str(folder / "flat.nii.gz"))
    return folder


def _contents(dataset: Path) -> dict:
    """Every file of a dataset: name -> fingerprint for images, parsed JSON for the JSON files."""
    out = {}
    for path in sorted(dataset.rglob("*")):
        if path.is_file():
            name = str(path.relative_to(dataset))
            out[name] = json.loads(path.read_text()) if path.suffix == ".json" else file_fingerprint(path)
    return out


def _command(sources, raw, *extra):
    return [sys.executable, "-m", "nnunet_subfore.cli", "register-unlabeled", str(sources), "-d", "951", "-n",
            "Scale", "--raw-root", str(raw), *extra]


def test_a_killed_registration_completes_when_run_again(sources, tmp_path):
    raw = tmp_path / "raw"
    env = {**os.environ, "SUBFORE_CACHE": str(tmp_path / "cache")}
    journal = raw / ".Dataset951_Scale.resumable" / "Dataset951_Scale" / ".journal"
    process = subprocess.Popen(_command(sources, raw, "-np", "2"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(journal.glob("*.json"))) < 6:  # the plan and at least 5 cases
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its workers, mid-case
    process.wait()
    done_before = len(list(journal.glob("*.json"))) - 1
    assert 5 <= done_before < N_VOLUMES + 1, "the kill should land part-way"
    assert not (raw / "Dataset951_Scale").exists()  # nothing in place before the end

    again = subprocess.run(_command(sources, raw, "-np", "2"), env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr  # 1: the flat volume is skipped
    assert f"{done_before} of {N_VOLUMES + 1} volume(s) done earlier" in again.stdout
    dataset = raw / "Dataset951_Scale"
    images = sorted(p.name for p in (dataset / "imagesTr").iterdir())
    assert len(images) == N_VOLUMES and all(f"scan-{i:02d}_0000.nii.gz" in " ".join(images) for i in range(N_VOLUMES))
    for image in (dataset / "imagesTr").iterdir():
        sitk.ReadImage(str(image))  # readable
    registered = json.loads((dataset / REGISTRATION_FILE).read_text())["registered"]
    assert len(registered) == N_VOLUMES == len({r["case"] for r in registered})  # none twice
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == N_VOLUMES
    assert not any(p.name.startswith(".") for p in dataset.rglob("*"))  # no journal, no partial file left
    assert not (raw / ".Dataset951_Scale.resumable").exists()

    single = register_unlabeled([sources], 951, "Scale", raw_root=tmp_path / "raw1", progress=False,
                                store_folder=tmp_path / "cache")
    assert single.exit_code() == 1
    assert _contents(tmp_path / "raw1" / "Dataset951_Scale") == _contents(dataset)  # -np 2 (resumed) == -np 1


def test_registration_fills_the_store_so_check_overlap_reads_no_registered_image(sources, tmp_path, monkeypatch):
    reads = []
    original = fingerprint_store.read_image
    monkeypatch.setattr(fingerprint_store, "read_image", lambda path: reads.append(path) or original(path))
    report = register_unlabeled([sources], 952, "Stored", raw_root=tmp_path / "raw", progress=False,
                                num_processes=2, store_folder=tmp_path / "cache")
    dataset = tmp_path / "raw" / "Dataset952_Stored"
    store = FingerprintStore(tmp_path / "cache")
    for image in (dataset / "imagesTr").iterdir():
        assert store.exact(image) == file_fingerprint(image)  # what the workers stored is what the file holds
    assert reads == [] and len(report.registered) == N_VOLUMES
    check_overlap(dataset, None, [sources], store=store)
    assert len(reads) == N_VOLUMES + 1  # the source folder's images, read once; the registered ones not at all


def test_an_unfinished_registration_with_other_inputs_is_refused_and_force_starts_over(sources, tmp_path):
    raw = tmp_path / "raw"
    work = raw / ".Dataset953_Other.resumable" / "Dataset953_Other" / ".journal"
    work.mkdir(parents=True)
    (work / "plan.json").write_text(json.dumps({"body_threshold_hu": -500.0, "volumes": []}))
    with pytest.raises(UserError, match="started with other inputs.*--force"):
        register_unlabeled([sources], 953, "Other", raw_root=raw, progress=False, store_folder=tmp_path / "c")
    report = register_unlabeled([sources], 953, "Other", raw_root=raw, force=True, progress=False,
                                store_folder=tmp_path / "c")
    assert len(report.registered) == N_VOLUMES and not (raw / ".Dataset953_Other.resumable").exists()
    with pytest.raises(UserError, match="at least 1"):
        register_unlabeled([sources], 954, "Bad", raw_root=raw, num_processes=0)
