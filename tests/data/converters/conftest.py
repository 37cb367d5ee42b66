"""Fixtures of the converter tests. The fake dataset trees are plain functions in subfore_test_helpers."""

from __future__ import annotations

import pytest

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@pytest.fixture(autouse=True)
def _no_user_nnunet_folders(monkeypatch):
    """The converters look in $nnUNet_raw / _preprocessed / _results (defaults, ID checks): never the user's."""
    for name in NNUNET_FOLDERS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    """$nnUNet_raw, $nnUNet_preprocessed and $nnUNet_results set to (not yet existing) folders under tmp_path.

    Returns (raw, preprocessed).
    """
    raw, pre, res = (tmp_path / name for name in NNUNET_FOLDERS)
    for name, folder in zip(NNUNET_FOLDERS, (raw, pre, res)):
        monkeypatch.setenv(name, str(folder))
    return raw, pre
