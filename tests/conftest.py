"""Shared fixtures: one demo run whose datasets the end-to-end tests reuse. Plain helpers: subfore_test_helpers.

The suite runs on two pytest-xdist workers (pyproject: ``-n 2 --dist loadgroup``). A session fixture is
made once per worker, so every test that uses a demo run goes to the same worker as the others that use
it (:func:`pytest_collection_modifyitems`), and the two demo chains run side by side, each worker with
its share of the cores (:func:`share_the_cores`). ``pytest -n 0`` runs everything in one process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from subfore_test_helpers import clean_environment, nnunet_test_environment, result_folder, run

#: session fixtures that run a demo -> the xdist group of the tests that use them
DEMO_GROUPS = {"demo_run": "demo_swinunetr", "cnn_demo_run": "demo_cnn"}


def share_the_cores() -> None:
    """Under xdist, give each worker and the nnU-Net commands it starts cores // workers torch threads.

    ``nnUNetv2_train -device cpu`` would take every core for each of the two trainings; the SubFore trainers
    honour OMP_NUM_THREADS instead, and waiting OpenMP threads sleep rather than spin (the commands that do
    take every core, the stock trainer and ``nnUNetv2_predict``, then cost the other worker little).
    A user's own OMP_NUM_THREADS wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


share_the_cores()


def keep_caches_out_of_home() -> None:
    """The fingerprint store (SUBFORE_CACHE) of a test session lives in a fresh temporary folder, never in ~/.cache
    (the commands the tests start inherit it)."""
    import tempfile

    os.environ["SUBFORE_CACHE"] = tempfile.mkdtemp(prefix="subfore_cache_")


keep_caches_out_of_home()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = [group for fixture, group in DEMO_GROUPS.items() if fixture in item.fixturenames]
        if len(groups) > 1:
            raise pytest.UsageError(f"{item.nodeid} uses two demo runs; each belongs to one xdist worker")
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups[0]))


def pytest_configure(config):
    """Refuse, rather than run each demo twice, where xdist's loadgroup cannot group (pytest-xdist#1386)."""
    from packaging.version import Version

    if config.getoption("dist", None) == "loadgroup" and Version(pytest.__version__).release >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup does not group tests on pytest >= 9.2 "
            f"(pytest-xdist#1386), so each demo run would be made on every worker. Install the versions "
            f"pyproject.toml pins (pip install '.[test]'), or run pytest -n 0.")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``nnunet-subfore demo --quick`` once per session: its datasets, results and printed report.

    Returns (workdir, env, completed process). The demo sets its own nnU-Net folders inside the workdir.
    """
    workdir = tmp_path_factory.mktemp("demo")
    done = run(["nnunet-subfore", "demo", "--quick", "--backbone", "swinunetr", "--workdir", str(workdir), "--force"], clean_environment(),
               timeout=1800)
    return workdir, nnunet_test_environment(workdir), done


@pytest.fixture(scope="session")
def cnn_demo_run(tmp_path_factory):
    """``nnunet-subfore demo --quick --backbone cnn`` once: (workdir, env, completed process)."""
    workdir = tmp_path_factory.mktemp("cnn_demo")
    done = run(["nnunet-subfore", "demo", "--quick", "--backbone", "cnn", "--workdir", str(workdir), "--force"],
               clean_environment(), timeout=1800)
    return workdir, nnunet_test_environment(workdir), done


@pytest.fixture(scope="session")
def cnn_checkpoint(cnn_demo_run) -> Path:
    """The pretraining checkpoint of :func:`cnn_demo_run`."""
    from nnunet_subfore.demo import CHAINS, PRETRAIN_ID, PRETRAIN_NAME
    from nnunet_subfore.paths import dataset_folder_name

    _, env, _ = cnn_demo_run
    chain = CHAINS["cnn"].for_quick()
    return (result_folder(env, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME), chain.pretrainer, chain.pretrain_plans)
            / "fold_0" / "checkpoint_final.pth")
