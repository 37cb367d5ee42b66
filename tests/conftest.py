"""Shared fixtures: one demo run whose datasets the end-to-end tests reuse. Plain helpers: subfore_test_helpers."""

from __future__ import annotations

import pytest
from subfore_test_helpers import clean_environment, nnunet_test_environment, run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``nnunet-subfore demo --quick`` once per session: its datasets, results and printed report.

    Returns (workdir, env, completed process). The demo sets its own nnU-Net folders inside the workdir.
    """
    workdir = tmp_path_factory.mktemp("demo")
    done = run(["nnunet-subfore", "demo", "--quick", "--backbone", "swinunetr", "--workdir", str(workdir), "--force"], clean_environment(),
               timeout=1800)
    return workdir, nnunet_test_environment(workdir), done
