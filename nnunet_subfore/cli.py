"""The ``nnunet-subfore`` command: what nnU-Net itself does not do.

A thin layer over the library. Each handler imports what it needs when it runs, so that
``nnunet-subfore trainer-path`` (used in ``export nnUNet_extTrainer=$(...)``) stays instant.

Exit status: 0 success; 1 finished but something was skipped or failed (reported by name);
2 refused (bad arguments, existing output without ``--force``, nothing to do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from nnunet_subfore.errors import UserError
from nnunet_subfore.recipe import BODY_THRESHOLD_HU, PAPER_MASKING


def _cmd_trainer_path(args) -> int:
    from nnunet_subfore.registry import trainer_path

    print(trainer_path())
    return 0


def _add_trainer_path(sub) -> None:
    p = sub.add_parser("trainer-path", help="print the folder to export as nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainer_path)


def _cmd_register_unlabeled(args) -> int:
    from nnunet_subfore.data.register import register_unlabeled

    report = register_unlabeled(
        sources=[Path(s) for s in args.sources],
        dataset_id=args.dataset_id,
        name=args.name,
        raw_root=Path(args.raw_root) if args.raw_root else None,
        force=args.force,
        body_threshold=args.body_threshold,
        num_processes=args.num_processes,
    )
    return report.exit_code()


def _add_register_unlabeled(sub) -> None:
    p = sub.add_parser(
        "register-unlabeled",
        help="register unlabeled CT (NIfTI, MHA/MHD, NRRD, DICOM folders) as an nnU-Net raw dataset with body labels",
    )
    p.add_argument("sources", nargs="+", help="files or folders (searched recursively)")
    p.add_argument("-d", dest="dataset_id", type=int, required=True, help="dataset ID, e.g. 601")
    p.add_argument("-n", dest="name", required=True, help="dataset name, e.g. CTPretrain")
    p.add_argument("--raw-root", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--body-threshold", type=float, default=BODY_THRESHOLD_HU,
                   help=f"HU above which a voxel may be body (default {BODY_THRESHOLD_HU:g})")
    p.add_argument("-np", dest="num_processes", type=int, default=1,
                   help="worker processes, one volume each at a time (default 1); rerunning the same command after an "
                        "interruption goes on where it stopped")
    p.add_argument("--force", action="store_true", help="replace an existing DatasetXXX_NAME, or start an unfinished "
                   "registration of it over (one with the same ID and another name is refused)")
    p.set_defaults(func=_cmd_register_unlabeled)


def _cmd_phantoms(args) -> int:
    from nnunet_subfore.data.phantoms import write_phantom_dataset

    try:
        folder = write_phantom_dataset(args.dataset_id, args.name, args.cases, seed=args.seed, unlabeled=args.unlabeled,
                                       raw_root=Path(args.raw_root) if args.raw_root else None,
                                       num_test=args.test_cases, variety=args.variety, test_variety=args.test_variety,
                                       shape=tuple(args.shape), force=args.force)
    except ValueError as e:
        raise UserError(str(e)) from None
    kind = "body labels (pretraining)" if args.unlabeled else "organ labels: 1 liver, 2 spleen, 3 kidneys"
    held_out = f" and {args.test_cases} held-out cases (imagesTs/labelsTs)" if args.test_cases else ""
    print(f"Wrote {args.cases} synthetic CT phantoms{held_out} with {kind} to {folder} "
          f"(variety {args.variety}; settings of each case: {folder / 'subfore_phantoms.json'}).")
    print(f"Next: nnUNetv2_plan_and_preprocess -d {int(args.dataset_id)} -c 3d_fullres --verify_dataset_integrity")
    return 0


def _add_phantoms(sub) -> None:
    p = sub.add_parser("phantoms", help="write a synthetic CT dataset (phantoms with organ labels, or body labels for "
                       "pretraining with --unlabeled) into nnU-Net's raw folder")
    p.add_argument("-d", dest="dataset_id", type=int, required=True, help="dataset ID, e.g. 501")
    p.add_argument("-n", dest="name", required=True, help="dataset name, e.g. PhantomCT")
    p.add_argument("--cases", type=int, required=True, help="number of (training) cases")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same data; labelled and unlabeled "
                   "datasets of one seed share no case (default 0)")
    p.add_argument("--unlabeled", action="store_true", help="a pretraining set: body masks as labels, exactly as "
                   "register-unlabeled writes them (default: organ labels)")
    p.add_argument("--variety", choices=["narrow", "wide"], default="wide",
                   help="wide: many patients, scanners, phases (default); narrow: one protocol, a sub-range of wide")
    p.add_argument("--test-cases", type=int, default=0, help="held-out cases in imagesTs/labelsTs (labelled only)")
    p.add_argument("--test-variety", choices=["narrow", "wide"], help="variety of the held-out cases (default: --variety)")
    p.add_argument("--shape", nargs=3, type=int, default=[64, 64, 64], metavar=("Z", "Y", "X"),
                   help="voxels per case (default 64 64 64; the slice thickness follows from the scan range)")
    p.add_argument("--raw-root", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--force", action="store_true", help="replace an existing DatasetXXX_NAME (one with the same ID "
                   "and another name is refused)")
    p.set_defaults(func=_cmd_phantoms)


def _cmd_convert(args) -> int:
    from nnunet_subfore.data.converters import convert_dataset

    report = convert_dataset(
        name=args.dataset,
        source=Path(args.source),
        dataset_id=args.dataset_id,
        raw_root=Path(args.raw_root) if args.raw_root else None,
        force=args.force,
        paper_split=args.paper_split,
    )
    return report.exit_code()


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a public dataset (btcv, flare22, mmwhs, amos22, brats, luna16, covid19)")
    p.add_argument("dataset", choices=["btcv", "flare22", "mmwhs", "amos22", "brats", "luna16", "covid19"])
    p.add_argument("source", help="the folder as the download unpacks it")
    p.add_argument("-d", dest="dataset_id", type=int, required=True)
    p.add_argument("--raw-root", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output dataset")
    p.add_argument("--paper-split", action="store_true", help="also write the paper's train/validation split")
    p.set_defaults(func=_cmd_convert)


def _cmd_plans(args) -> int:
    from nnunet_subfore.plans import masking_settings, next_steps, write_subfore_plans

    masking = masking_settings(
        threshold=args.threshold, threshold_hu=args.threshold_hu, threshold_from=args.threshold_from and Path(args.threshold_from),
        window=args.window and tuple(args.window), subvolume_size=args.subvolume_size, ratio=args.ratio,
        selection=args.selection, fill=args.fill, criterion=args.criterion)
    out = write_subfore_plans(
        args.dataset, patch_size=args.patch and tuple(args.patch), batch_size=args.batch_size,
        hu_window=args.hu_window and tuple(args.hu_window), source_plans=args.source_plans, target_plans=args.plans_name,
        configuration=args.configuration, force=args.force, tiny_cnn=args.tiny_cnn, masking=masking or None,
        from_checkpoint=args.from_checkpoint and Path(args.from_checkpoint))
    print("\n".join(next_steps(out, args.plans_name, args.configuration, masking,
                               bool(args.hu_window or args.from_checkpoint))))
    return 0


def _add_plans(sub) -> None:
    p = sub.add_parser("plans", help="write the SubForePlans preset derived from a dataset's nnUNetPlans")
    p.add_argument("-d", dest="dataset", required=True, help="dataset ID or name")
    p.add_argument("--patch", nargs=3, type=int, metavar=("D", "H", "W"), help="3d_fullres patch (default: the paper's 96 96 96)")
    p.add_argument("--batch-size", type=int, help="batch size (default: keep the source plans')")
    p.add_argument("--hu-window", nargs=2, type=float, metavar=("LO", "HI"), help="fixed HU window as CT normalization")
    p.add_argument("--tiny-cnn", action="store_true",
                   help="a tiny version of the source plans' CNN (3 stages, 16-64 features, patch 32^3, batch 2) for "
                        "CPU demos and tests; same data identifier, no new preprocessing")
    p.add_argument("--from-checkpoint", metavar="CKPT",
                   help="take network, spacing and patch from a checkpoint's nnssl_adaptation_plan (an nnssl "
                        "checkpoint such as ResEnc-L, or a CNN pretraining checkpoint of this package); the "
                        "dataset's normalization stays; needs nnUNetv2_preprocess afterwards")
    p.add_argument("--threshold", type=float, help=f"masking: lambda on the windowed intensity (paper {PAPER_MASKING.threshold:g})")
    p.add_argument("--threshold-hu", type=float, help="masking: lambda as the HU of a uniform block (with --window or "
                   f"the paper's; the paper's lambda is {PAPER_MASKING.threshold_hu:g} HU)")
    p.add_argument("--threshold-from", metavar="JSON", help="masking: lambda and window of a threshold-analysis json")
    p.add_argument("--window", nargs=2, type=float, metavar=("LO", "HI"),
                   help=f"masking: HU window of the criterion (paper {PAPER_MASKING.window[0]:g} {PAPER_MASKING.window[1]:g}); "
                   "not the normalization (--hu-window)")
    p.add_argument("--subvolume-size", type=int, help=f"masking: subvolume side (paper {PAPER_MASKING.subvolume_size})")
    p.add_argument("--ratio", type=float, help=f"masking: ratio (paper {PAPER_MASKING.ratio:g})")
    p.add_argument("--selection", choices=["bernoulli", "exact", "random"], help="masking: selection (paper bernoulli)")
    p.add_argument("--fill", choices=["noise", "zero"], help="masking: fill (paper noise)")
    p.add_argument("--criterion", choices=["fixed", "otsu", "nonzero"], help="masking: fixed lambda (paper), per-patch "
                   "Otsu bounded below by lambda, or nonzero (MRI: share inside the nonzero region >= threshold)")
    p.add_argument("--source-plans", default="nnUNetPlans")
    p.add_argument("--plans-name", default="SubForePlans")
    p.add_argument("-c", dest="configuration", default="3d_fullres")
    p.add_argument("--force", action="store_true", help="overwrite an existing preset")
    p.set_defaults(func=_cmd_plans)


def _cmd_adapt_checkpoint(args) -> int:
    from nnunet_subfore.checkpoints import adapt_checkpoint, check_adaptation_request, load_checkpoint
    from nnunet_subfore.registry import build_trainer_network, suggested_trainers

    output, source = Path(args.output), Path(args.source)
    seed = check_adaptation_request(output, args.force, args.num_input_channels, args.encoder_only, args.seed)
    checkpoint = load_checkpoint(source)
    target = build_trainer_network(args.trainer, Path(args.plans), args.configuration, args.num_input_channels, seed=seed)
    report = adapt_checkpoint(source=source, checkpoint=checkpoint, target=target, trainer_name=args.trainer,
                              output=output, trainers_for_backbone=suggested_trainers(args.trainer), force=args.force,
                              encoder_only=args.encoder_only)
    print(report.describe())
    return 0


def _add_adapt_checkpoint(sub) -> None:
    p = sub.add_parser("adapt-checkpoint", help="make a pretraining checkpoint loadable by -pretrained_weights")
    p.add_argument("source", help="checkpoint_final.pth of a SubFore pretraining run")
    p.add_argument("--plans", required=True, help="plans JSON of the fine-tuning dataset")
    p.add_argument("-c", dest="configuration", default="3d_fullres")
    p.add_argument("-tr", dest="trainer", required=True, help="fine-tuning trainer class name")
    p.add_argument("--num-input-channels", type=int, required=True)
    p.add_argument("-o", dest="output", required=True)
    p.add_argument("--encoder-only", action="store_true", help="take only the encoder (and stem) from the checkpoint; "
                   "the decoder starts as the trainer initializes it (nnU-Net master's pretrained fine-tuning)")
    p.add_argument("--seed", type=int, help="with --encoder-only: seed of the fresh decoder's initialization (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    p.set_defaults(func=_cmd_adapt_checkpoint)


def _cmd_summarize(args) -> int:
    from nnunet_subfore.reporting.summarize import summarize

    result = summarize(
        dataset=args.dataset,
        trainers=args.trainers,
        plans=args.plans,
        configuration=args.configuration,
        folds=tuple(args.folds),
        output_dir=Path(args.output) if args.output else None,
    )
    print(result.markdown)
    for path in result.files:
        print(f"wrote {path}")
    return 1 if result.missing else 0


def _add_summarize(sub) -> None:
    p = sub.add_parser("summarize", help="per-class Dice table (mean/std over folds) and bar chart across trainers")
    p.add_argument("-d", dest="dataset", required=True)
    p.add_argument("-tr", dest="trainers", nargs="+", required=True)
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("-c", dest="configuration", default="3d_fullres")
    p.add_argument("-f", dest="folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("-o", dest="output", help="output folder (default: $nnUNet_results/DatasetXXX/subfore_summary); "
                   "its dice__PLANS__CONFIGURATION.{md,csv,png} are rewritten on every run")
    p.set_defaults(func=_cmd_summarize)


def _cmd_show_masking(args) -> int:
    from nnunet_subfore.reporting.masking_figure import draw_masking

    out = draw_masking(
        image=Path(args.image),
        output=Path(args.output),
        patch_size=args.patch,
        subvolume_size=args.subvolume_size,
        window=tuple(args.window),
        threshold=args.threshold,
        ratio=args.ratio,
        seed=args.seed,
        force=args.force,
        criterion=args.criterion,
    )
    print(f"wrote {out}")
    return 0


def _add_show_masking(sub) -> None:
    p = sub.add_parser("show-masking", help="draw the HU foreground masking of an image (PNG)")
    p.add_argument("image", help="CT image (NIfTI, MHA, ...) in HU (or MRI with --criterion nonzero)")
    p.add_argument("-o", dest="output", required=True, help="output PNG")
    p.add_argument("--patch", nargs=3, type=int, metavar=("D", "H", "W"), help="crop this patch around the centre")
    p.add_argument("--subvolume-size", type=int, default=PAPER_MASKING.subvolume_size)
    p.add_argument("--window", nargs=2, type=float, default=list(PAPER_MASKING.window), metavar=("LO", "HI"))
    p.add_argument("--threshold", type=float, default=PAPER_MASKING.threshold)
    p.add_argument("--ratio", type=float, default=PAPER_MASKING.ratio)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--criterion", choices=["fixed", "otsu", "nonzero"], default=PAPER_MASKING.criterion,
                   help="fixed: the paper's lambda; otsu: per patch, Otsu over its block means, never below lambda; "
                   "nonzero (MRI): share of the subvolume inside the nonzero region >= --threshold")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=_cmd_show_masking)


def _cmd_show_reconstruction(args) -> int:
    from nnunet_subfore.registry import find_trainer_class
    from nnunet_subfore.reporting.reconstruction_figure import show_reconstruction

    result, out = show_reconstruction(
        checkpoint=Path(args.checkpoint),
        images=[Path(p) for p in args.images],
        output=Path(args.output),
        find_trainer=find_trainer_class,
        center=args.center,
        seed=args.seed,
        device=args.device,
        force=args.force,
    )
    print(result.describe())
    print(f"wrote {out}")
    return 0


def _add_show_reconstruction(sub) -> None:
    p = sub.add_parser("show-reconstruction", help="what a pretraining checkpoint reconstructs: image, masked input, "
                       "reconstruction and error on orthogonal slices of one patch (PNG)")
    p.add_argument("checkpoint", help="checkpoint_*.pth of a SubFore pretraining run, in its nnU-Net result folder "
                   "(plans.json and dataset.json one level up)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="raw image (CT in HU, .nii.gz/.mha/...), one per channel of the run's dataset.json; "
                   "preprocessed as nnUNetv2_predict does")
    p.add_argument("-o", dest="output", required=True, help="output PNG")
    p.add_argument("--center", nargs=3, type=int, metavar=("Z", "Y", "X"),
                   help="centre the patch on this voxel of the image (numpy order z y x; default: the centre)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask and the fill (default 0)")
    p.add_argument("--device", default="cpu", help="where the network runs: cpu (default), cuda, cuda:1, mps")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=_cmd_show_reconstruction)


def _cmd_check_overlap(args) -> int:
    from nnunet_subfore.data.overlap import check_overlap
    from nnunet_subfore.paths import find_dataset_name, nnunet_folder

    if len(args.datasets) != 2:
        raise UserError(f"Give two datasets: -d PRETRAIN_ID -d DOWNSTREAM_ID (got {len(args.datasets)}).")
    raw = nnunet_folder("raw", args.raw_root)
    pretrain, downstream = (raw / find_dataset_name(d, raw) for d in args.datasets)
    from nnunet_subfore.data.fingerprint_store import FingerprintStore

    store = FingerprintStore(args.cache)
    report = check_overlap(pretrain, downstream, [Path(p) for p in args.images or []],
                           progress=lambda case: print(f"  fingerprinting {case}", file=sys.stderr, flush=True)
                           if args.verbose else None, near=not args.exact_only, store=store)
    if args.verbose:
        print(f"  {store.reads} image(s) read, the rest from {store.folder}", file=sys.stderr)
    print(report.describe())
    return 1 if report.shared else 0


def _add_check_overlap(sub) -> None:
    p = sub.add_parser("check-overlap", help="find cases of a downstream dataset that were pretraining cases "
                       "(same voxels under another name or format, or a crop, resample, rescaled or reoriented "
                       "copy); exit 1 when any is found")
    p.add_argument("-d", dest="datasets", action="append", required=True,
                   help="twice: -d PRETRAIN_ID -d DOWNSTREAM_ID (IDs or DatasetXXX_NAME in $nnUNet_raw)")
    p.add_argument("--images", action="append", metavar="DIR",
                   help="also check the images in DIR (e.g. the downstream imagesTs); repeatable")
    p.add_argument("--raw-root", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--exact-only", action="store_true",
                   help="only exact copies (skips the near-duplicate search, which compares every pair of cases)")
    p.add_argument("--cache", metavar="DIR", help="where fingerprints are kept between runs "
                   "(default: $SUBFORE_CACHE/fingerprints, else ~/.cache/nnunet_subfore/fingerprints)")
    p.add_argument("-v", dest="verbose", action="store_true", help="name each case while it is read")
    p.set_defaults(func=_cmd_check_overlap)


def _cmd_threshold_analysis(args) -> int:
    from nnunet_subfore.reporting.threshold_analysis import analyse_dataset, markdown, write_threshold_analysis

    analysis, output = analyse_dataset(
        args.dataset, args.raw_root, Path(args.output) if args.output else None, args.force, tuple(args.window),
        args.subvolume_size, args.max_cases, progress=lambda case: print(f"  reading {case}", file=sys.stderr, flush=True))
    print(markdown(analysis))
    for path in write_threshold_analysis(analysis, output, force=args.force):
        print(f"wrote {path}")
    return 0


def _add_threshold_analysis(sub) -> None:
    p = sub.add_parser("threshold-analysis", help="the paper's Fig. 3b on a labelled CT dataset: windowed-intensity "
                       "histograms of background and labels, the lambda that best separates them (PNG, md, csv, json)")
    p.add_argument("-d", dest="dataset", required=True, help="labelled CT dataset (ID or DatasetXXX_NAME in $nnUNet_raw)")
    p.add_argument("-o", dest="output", help="output folder (default: $nnUNet_results/DatasetXXX/subfore_threshold_analysis)")
    p.add_argument("--window", nargs=2, type=float, default=list(PAPER_MASKING.window), metavar=("LO", "HI"))
    p.add_argument("--subvolume-size", type=int, default=PAPER_MASKING.subvolume_size)
    p.add_argument("--max-cases", type=int, help="read at most N cases, evenly spread (the paper used 40)")
    p.add_argument("--raw-root", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--force", action="store_true", help="overwrite earlier outputs")
    p.set_defaults(func=_cmd_threshold_analysis)


def _cmd_masking_report(args) -> int:
    from nnunet_subfore.registry import find_trainer_class
    from nnunet_subfore.reporting.masking_report import markdown, report_for_trainer, write_masking_report

    report, output = report_for_trainer(
        find_trainer_class(args.trainer), args.dataset, args.plans, args.configuration,
        Path(args.output) if args.output else None, args.force, args.patches_per_case, args.seed, args.max_cases,
        args.preprocessed_root)
    print(markdown(report))
    for path in write_masking_report(report, output, force=args.force):
        print(f"wrote {path}")
    return 0


def _add_masking_report(sub) -> None:
    p = sub.add_parser("masking-report", help="foreground share of the pretraining patches as the trainer sees them, "
                       "and the expected masked share (PNG, md, csv, json)")
    p.add_argument("-d", dest="dataset", required=True, help="pretraining dataset (ID or DatasetXXX_NAME)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans the trainer runs with (default nnUNetPlans)")
    p.add_argument("-c", dest="configuration", default="3d_fullres")
    p.add_argument("-tr", dest="trainer", default="SubForePretrainTrainer",
                   help="pretraining trainer whose patch size and masking to use (default SubForePretrainTrainer)")
    p.add_argument("--patches-per-case", type=int, default=8,
                   help="patches sampled per case by nnU-Net's loader, a third foreground-forced (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cases", type=int, help="read at most N cases, evenly spread")
    p.add_argument("-o", dest="output", help="output folder (default: $nnUNet_results/DatasetXXX/subfore_masking_report/"
                   "TRAINER__PLANS__CONFIGURATION)")
    p.add_argument("--preprocessed-root", help="nnU-Net preprocessed folder (default: $nnUNet_preprocessed)")
    p.add_argument("--force", action="store_true", help="overwrite earlier outputs")
    p.set_defaults(func=_cmd_masking_report)


def _cmd_demo(args) -> int:
    from nnunet_subfore.demo import run_demo

    return run_demo(workdir=Path(args.workdir), force=args.force, quick=args.quick, backbone=args.backbone)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in synthetic CT: pretraining, the reconstruction "
                       "picture, pretrained vs scratch at 1 and 2 labelled cases (CPU, 9-13 minutes on 2 cores)")
    p.add_argument("--workdir", default="subfore_demo", help="folder for nnUNet_raw/preprocessed/results (default: ./subfore_demo)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty work folder, replacing earlier demo output")
    p.add_argument("--quick", action="store_true", help="fewer cases, the shortest trainers: a plumbing check (what "
                   "the test suite runs)")
    p.add_argument("--backbone", choices=["cnn", "swinunetr"], default="cnn",
                   help="cnn: a tiny version of the U-Net nnU-Net plans (default); swinunetr: the paper's transformer")
    p.set_defaults(func=_cmd_demo)


def _cmd_label_efficiency(args) -> int:
    from nnunet_subfore.label_efficiency import label_efficiency

    result = label_efficiency(
        dataset=args.dataset, output=Path(args.output), plans=args.plans, configuration=args.configuration,
        trainer=args.trainer, arms=args.arm or (), arm_trainers=args.arm_trainer or (),
        scratch_trainer=args.scratch_trainer, label_counts=args.labels, seeds=args.seeds, heldout=args.heldout,
        heldout_cases=args.heldout_cases, device=args.device, quick=args.quick,
        preprocessed_root=Path(args.preprocessed_root) if args.preprocessed_root else None,
    )
    print(result.markdown)
    for path in result.files:
        print(f"wrote {path}")
    return 0


def _add_label_efficiency(sub) -> None:
    p = sub.add_parser("label-efficiency", help="fine-tune pretrained checkpoints and scratch on 1, 2, 4, ... labelled "
                       "cases (nested subsets, several seeds), evaluate one held-out set: table and plot; resumable")
    p.add_argument("-d", dest="dataset", required=True,
                   help="labelled dataset preprocessed with the pretraining plans (ID or DatasetXXX_NAME)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="its plans (the pretraining plans, moved; default nnUNetPlans)")
    p.add_argument("-c", dest="configuration", default="3d_fullres")
    p.add_argument("-tr", dest="trainer", help="fine-tuning trainer of the pretrained arms (default nnUNetTrainer)")
    p.add_argument("--arm", action="append", metavar="NAME=CHECKPOINT",
                   help="a pretrained arm: its name and checkpoint (repeatable); the scratch arm is always run")
    p.add_argument("--arm-trainer", action="append", metavar="NAME=TRAINER",
                   help="fine-tune arm NAME with another trainer than -tr (repeatable)")
    p.add_argument("--scratch-trainer", help="trainer of the scratch arm (default: TRAINER_scratch if it exists, else -tr)")
    p.add_argument("--labels", nargs="+", type=int, metavar="N", help="labelled training cases per run (default 1 2 4)")
    p.add_argument("--seeds", nargs="+", type=int, help="one nested subset sequence per seed (default 0 1 2)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--heldout", type=int, metavar="N", help="hold out N cases, drawn with a fixed seed (default: "
                       "a fifth of the cases, at least 1)")
    group.add_argument("--heldout-cases", nargs="+", metavar="CASE", help="hold out these cases")
    p.add_argument("-o", dest="output", required=True,
                   help="experiment folder (new or empty; rerun with the same folder to resume or extend)")
    p.add_argument("-device", "--device", dest="device", choices=["cuda", "cpu", "mps"],
                   help="training device (default: cuda when available)")
    p.add_argument("--quick", action="store_true", help="tests: the demo's shortest CNN trainer, 1 and 2 labelled "
                   "cases, one seed, one held-out case (with tiny-CNN plans)")
    p.add_argument("--preprocessed-root", help="nnU-Net preprocessed folder (default: $nnUNet_preprocessed)")
    p.set_defaults(func=_cmd_label_efficiency)


def _cmd_train(args) -> int:
    from nnunet_subfore.distributed_training import train

    return train(args.nnunet_args)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="nnUNetv2_train with the same arguments; started by torchrun (WORLD_SIZE > 1), "
                       "DDP across every process of every node (NCCL on cuda, gloo on cpu)", add_help=False)
    p.add_argument("nnunet_args", nargs=argparse.REMAINDER,
                   help="nnUNetv2_train's arguments: DATASET CONFIGURATION FOLD [-tr ...] [-p ...] [-device ...]")
    p.set_defaults(func=_cmd_train)


#: The commands in the order ``--help`` lists them: each adds its parser (which names its handler).
COMMANDS = (_add_trainer_path, _add_demo, _add_register_unlabeled, _add_train, _add_phantoms, _add_convert, _add_plans,
            _add_adapt_checkpoint, _add_summarize, _add_label_efficiency, _add_check_overlap, _add_threshold_analysis,
            _add_masking_report, _add_show_masking, _add_show_reconstruction)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-subfore",
        description="HU-based foreground MIM pretraining and UNETR/SwinUNETR fine-tuning for nnU-Net v2.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # nnUNetv2_train's arguments as they are, -h included
        args = argparse.Namespace(command="train", func=_cmd_train, nnunet_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nnunet-subfore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
