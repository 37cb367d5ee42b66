"""``convert_dataset``: one public dataset from its unpacked download to an nnU-Net v2 raw dataset.

Claims the output folder (:class:`nnunet_subfore.data.staging.DatasetStaging`), lists the cases and
writes them with the lister and writer the spec's ``kind`` picks, and writes the paper split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from nnunet_subfore.data.converters.layout import Listing
from nnunet_subfore.data.converters.native import list_paired, write_native
from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.specs import DatasetSpec, find_spec
from nnunet_subfore.data.converters.splits import note_stale_splits, paper_split_target, write_paper_split
from nnunet_subfore.data.converters.unlabeled import convert_unlabeled
from nnunet_subfore.data.converters.via_nnunet import (
    list_amos, list_msd, write_with_nnunet_amos, write_with_nnunet_msd,
)
from nnunet_subfore.data.staging import DatasetStaging, check_dataset_free
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import nnunet_folder


LISTERS: Dict[str, Callable[[DatasetSpec, Path], Listing]] = {
    "native": list_paired,
    "nnunet-amos": list_amos,
    "nnunet-msd": list_msd,
}
WRITERS: Dict[str, Callable[..., None]] = {
    "native": write_native,
    "nnunet-amos": write_with_nnunet_amos,
    "nnunet-msd": write_with_nnunet_msd,
}


def convert_dataset(
    name: str,
    source: Path,
    dataset_id: int,
    raw_root: Optional[Path] = None,
    force: bool = False,
    paper_split: bool = False,
    preprocessed_root: Optional[Path] = None,
    num_processes: Optional[int] = None,
) -> ConversionReport:
    """Convert one public dataset into ``<raw_root>/DatasetXXX_<Name>`` (nnU-Net v2 raw format).

    Args:
        name: dataset key, one of :data:`DATASETS` (btcv flare22 mmwhs amos22 brats luna16 covid19).
        source: the folder as the dataset's download unpacks it (or a folder up to two levels above it).
        dataset_id: nnU-Net dataset ID (1..999).
        raw_root: nnU-Net raw folder; default ``$nnUNet_raw``.
        force: replace an existing output dataset (and an existing ``splits_final.json``).
        paper_split: also write ``splits_final.json``: nnU-Net's 5 folds plus the paper's
            train/validation split as fold 5 (labelled datasets only).
        preprocessed_root: nnU-Net preprocessed folder for ``splits_final.json``; default
            ``$nnUNet_preprocessed``.
        num_processes: worker processes for nnU-Net's MSD converter; default min(4, CPUs).

    Returns:
        The report; ``report.exit_code()`` is the command's exit status. A summary is printed.

    Raises:
        UserError: unknown dataset, missing or unrecognised source layout, existing output without
            ``force``, a dataset ID taken by another dataset, or an impossible ``paper_split``.
    """
    spec = find_spec(name)
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"{source} is not a folder. Pass the folder the {spec.title} download unpacks to "
                        f"({spec.layout_hint}).")
    raw_root = nnunet_folder("raw", raw_root)
    if spec.kind == "unlabeled":
        if paper_split:
            raise UserError(f"--paper-split applies to the labelled downstream datasets; {spec.title} is unlabeled "
                            f"pretraining data. Drop --paper-split.")
        check_dataset_free(raw_root, dataset_id, spec.folder_name, force, protected=[source])
        return convert_unlabeled(spec, source, dataset_id, raw_root, force)  # register_unlabeled prints its summary
    staging = DatasetStaging(raw_root, dataset_id, spec.folder_name, force=force, protected=[source])
    folder = staging.destination.name
    splits_target = paper_split_target(folder, preprocessed_root, force) if paper_split else None
    listing = LISTERS[spec.kind](spec, source)
    report = _convert_labelled(spec, listing, staging, int(dataset_id), num_processes)
    if report.converted and splits_target is not None:
        write_paper_split(spec, listing, report, splits_target)
    elif report.converted and force:
        note_stale_splits(report, folder, preprocessed_root)
    print(report.describe())
    return report


def _convert_labelled(spec: DatasetSpec, listing: Listing, staging: DatasetStaging, dataset_id: int,
                      num_processes: Optional[int]) -> ConversionReport:
    """Build the dataset in ``staging`` with the spec's writer; move it into place if any case made it.

    Args:
        spec: the dataset.
        listing: the cases found by the spec's lister (its problems go into the report).
        staging: the claimed output folder ``<raw_root>/DatasetXXX_Name`` (not yet entered).
        dataset_id: the nnU-Net dataset ID.
        num_processes: passed to the writer.
    """
    report = ConversionReport(dataset=spec.key, skipped=list(listing.problems))
    with staging:
        WRITERS[spec.kind](spec, listing, staging.path, dataset_id, report, num_processes)
        if report.converted:
            report.output_dir = staging.commit()
    return report
