"""The journal of a registration run: what is done, so that the same command after a kill goes on from there.

A registration builds its dataset in a resumable work folder (:class:`nnunet_subfore.data.staging.DatasetStaging`).
The journal lives in it, as ``.journal/``:

- ``plan.json``: the volumes and the case names they get, and the body threshold; written once, by the first
  run. A later run with other inputs or settings is refused (the case names would not match the files).
- ``<case>.json``: one per finished volume, registered or skipped (with the reason, and the remark worth a look),
  written atomically after the case's files are complete. A case is done if and only if its record exists, so a
  kill at any moment leaves no half-written case that counts: a case's image and label are written under
  temporary names and renamed into place, and the next run removes such leftovers and does the case again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_subfore.errors import UserError

JOURNAL = ".journal"
PLAN = "plan.json"
#: The infix of a case file that is being written (``imagesTr/.CASE_0000.nii.gz.partial-PID.nii.gz``).
PARTIAL = ".partial-"


def write_json_atomically(path: Path, content: dict) -> None:
    """``path`` holds ``content`` in full, or what it held before: never a part."""
    partial = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(partial, path)


class RegistrationJournal:
    """The records of one registration's work folder.

    Args:
        folder: the dataset's work folder (``imagesTr``, ``labelsTr`` and the journal go there).
        plan: the run's plan (plain JSON values): the first run writes it, a resumed run must bring the same.
        destination: the dataset folder (named in messages).
    """

    def __init__(self, folder: Path, plan: dict, destination: Path):
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL
        self.path.mkdir(exist_ok=True)
        (self.folder / "imagesTr").mkdir(exist_ok=True)
        (self.folder / "labelsTr").mkdir(exist_ok=True)
        plan_file = self.path / PLAN
        if plan_file.is_file():
            if json.loads(plan_file.read_text(encoding="utf-8")) != plan:
                raise UserError(
                    f"An unfinished registration of {destination.name} ({self.folder.parent}) was started with other "
                    f"inputs or settings. Rerun that command to finish it, or pass --force to start over.")
        else:
            write_json_atomically(plan_file, plan)
        self._remove_partial_files()

    def _remove_partial_files(self) -> None:
        for sub in ("imagesTr", "labelsTr", JOURNAL):
            for leftover in (self.folder / sub).glob(f".*{PARTIAL}*"):
                leftover.unlink(missing_ok=True)

    def records(self) -> Dict[str, dict]:
        """``{case: record}`` of the finished cases."""
        out = {}
        for path in self.path.glob("*.json"):
            if path.name != PLAN:
                record = json.loads(path.read_text(encoding="utf-8"))
                out[record["case"]] = record
        return out

    def finish(self, record: dict) -> None:
        """Mark ``record['case']`` done (its files are complete, or it was skipped)."""
        write_json_atomically(self.path / f"{record['case']}.json", record)

    def remove(self) -> None:
        """Drop the journal (before the dataset is put in place: it is not part of the dataset)."""
        for path in self.path.iterdir():
            path.unlink()
        self.path.rmdir()


def case_record(case: str, source: Path, reason: Optional[str] = None, note: Optional[str] = None,
                series_uid: str = "") -> dict:
    """A journal record: registered when ``reason`` is None, else skipped for ``reason``."""
    record: Dict[str, object] = {"case": case, "source": str(source)}
    if series_uid:
        record["dicom_series_uid"] = series_uid
    if reason is not None:
        record["skipped"] = reason
    if note:
        record["note"] = note
    return record


def registered_records(records: List[dict]) -> List[dict]:
    """What ``subfore_registration.json`` lists as registered (case, source, DICOM series UID)."""
    return [{k: r[k] for k in ("case", "source", "dicom_series_uid") if k in r} for r in records if "skipped" not in r]
