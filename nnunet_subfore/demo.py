"""``nnunet-subfore demo``: the whole SubFore chain on built-in synthetic CT, on a CPU, in minutes.

Two chains (``--backbone``): ``cnn`` (default) pretrains and fine-tunes a tiny version of the U-Net
that nnU-Net plans itself (the network nnU-Net users train, fine-tuned with nnU-Net's own recipe);
``swinunetr`` runs the paper's transformer. The steps (:meth:`Demo.steps_of`, printed as they run):

1. synthetic CT (:mod:`nnunet_subfore.data.phantoms`): an unlabeled collection from the phantoms'
   wide variety (NIfTI and MHA), and a labelled organ set (liver, spleen, kidneys) whose training pool
   comes from the narrow variety (one site, one protocol) and whose held-out cases come from the wide
   one, all in ``imagesTr`` (label-efficiency holds the held-out cases out by name)
2. ``register-unlabeled``: the collection becomes a raw dataset with body labels
3. ``nnUNetv2_plan_and_preprocess`` for the pretraining set; the downstream set takes the
   pretraining plans (``nnUNetv2_move_plans_between_datasets``) so both share one normalization
4. ``nnUNetv2_train ... -tr <pretrainer>`` (HU foreground MIM)
5. ``show-reconstruction``: what the pretrained network reconstructs on a held-out image, with its masked
   L1 against the best constant
6. ``adapt-checkpoint --encoder-only`` (the pretrained encoder and stem, the decoder as nnU-Net initializes
   it: the transfer recipe the benchmark supports, docs/benchmarks.md), then ``label-efficiency``: the
   fine-tuning trainer from those weights (the stock trainer's recipe) and from scratch, with 1 and 2
   labelled cases, one seed, each run an ``nnUNetv2_train`` whose final validation predicts and scores
   the held-out cases
7. the table, a one-line reading computed from it, and where everything is

The trainers are the shipped ``_demo`` variants: tiny networks, 32^3 patches, a few hundred iterations.
The numbers show that the pipeline works and what one seed at this scale gives; they are no evidence
for or against the method (``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_subfore.commands import NNUNET_FOLDER_VARIABLES, nnunet_environment, run_command
from nnunet_subfore.demo_chains import (  # noqa: F401 (DOWNSTREAM_PLANS, FINETUNER, SCRATCH: the demo's names)
    CHAINS,
    DEFAULT_BACKBONE,
    DOWNSTREAM_PLANS,
    FINETUNER,
    PRETRAINER,
    SCRATCH,
    DemoChain,
)
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import dataset_folder_name, trainer_output_folder
from nnunet_subfore.registry import trainer_path

PRETRAIN_ID, PRETRAIN_NAME = 991, "SubForeDemoCT"
DOWNSTREAM_ID, DOWNSTREAM_NAME = 992, "SubForeDemoOrgans"
MARKER = ".subfore_demo"
SHAPE = (48, 64, 64)
#: The label-efficiency run: labelled cases per fine-tuning, subset seeds, the pretrained arm's name.
LABEL_COUNTS, SEEDS, PRETRAINED_ARM = (1, 2), (0,), "pretrained"
#: The encoder-only checkpoint the pretrained arm starts from (in ``WORKDIR/checkpoints``).
ENCODER_ONLY_CHECKPOINT = "pretrained_encoder_only.pth"
#: How torch's OpenMP threads wait: sleeping, not spinning. Measured, one step of the demo's tiny U-Net with
#: 2 threads on 2 cores: quiet machine 0.16 s spinning (OpenMP's default), 0.19 s sleeping, 0.26-0.28 s with one
#: thread; with other jobs on the cores 1.8-2.4 s spinning, 0.30-0.33 s sleeping, 0.27-0.30 s with one thread.
#: Sleeping threads cost little alone and save the demo from an order of magnitude on a shared machine.
OMP_WAIT_POLICY = "PASSIVE"
#: Where the demo writes its own outputs inside the work folder.
RECONSTRUCTION_PNG, LABEL_EFFICIENCY_FOLDER = "reconstruction.png", "label_efficiency"


@dataclass(frozen=True)
class DemoSize:
    """How many phantoms the demo writes.

    Attributes:
        pretrain: unlabeled CT volumes (wide variety) to pretrain on.
        pool: labelled cases (narrow variety) that label-efficiency draws its 1 and 2 training cases from.
        heldout: labelled held-out cases (wide variety), every run's validation set.
    """

    pretrain: int
    pool: int
    heldout: int


FULL, QUICK = DemoSize(pretrain=12, pool=4, heldout=3), DemoSize(pretrain=6, pool=3, heldout=2)


class Demo:
    """Runs the demo chain in ``workdir``; every nnU-Net command's output goes to ``workdir/logs``.

    Args:
        workdir: folder for the demo's data, logs and (unless the user set them) nnU-Net folders.
        size: how many phantoms (:data:`FULL`, :data:`QUICK`).
        backbone: a key of :data:`CHAINS`.
        quick: the chain's short trainers (what the tests run).
        cores: CPU cores to size the worker counts to (default: those this process may use).
    """

    def __init__(self, workdir: Path, size: DemoSize = FULL, backbone: str = DEFAULT_BACKBONE, quick: bool = False,
                 cores: Optional[int] = None) -> None:
        from nnunet_subfore.label_efficiency import available_cores

        if backbone not in CHAINS:
            raise UserError(f"--backbone must be one of {sorted(CHAINS)}, got {backbone!r}.")
        self.chain = CHAINS[backbone].for_quick() if quick else CHAINS[backbone]
        self.workdir = Path(workdir).expanduser().resolve()
        self.size = size
        self.cores = available_cores() if cores is None else int(cores)
        self.logs = self.workdir / "logs"
        self.env = nnunet_environment([trainer_path()], root=self.workdir, keep_set_folders=True,
                                      base=demo_base_environment(self.cores))
        self.heldout: List[str] = []
        self.step_no, self.t0, self.step_seconds = 0, time.time(), {}

    @staticmethod
    def steps_of(chain: DemoChain) -> tuple:
        """The titles of the steps, in the order :func:`run_demo` runs them."""
        counts = " and ".join(str(n) for n in LABEL_COUNTS)
        return (
            "Synthetic CT: unlabeled (wide variety, NIfTI + MHA); labelled organs (narrow-variety training pool, "
            "wide-variety held-out cases)",
            "Register the unlabeled CT with body labels (nnunet-subfore register-unlabeled)",
            "Plan and preprocess; the downstream set takes the pretraining plans",
            f"Pretrain: HU foreground masked image modeling ({chain.pretrainer})",
            "What the pretrained network reconstructs (show-reconstruction, on a held-out image)",
            f"Label efficiency: {chain.finetuner} from the pretrained encoder (adapt-checkpoint --encoder-only) vs "
            f"from scratch, {counts} labelled cases, one seed (nnunet-subfore label-efficiency)",
            "Summary",
        )

    @property
    def steps(self) -> tuple:
        return self.steps_of(self.chain)

    # ----------------------------------------------------------------------------------------------
    def dataset(self, which: str) -> str:
        """nnU-Net's folder name of the demo's ``"pretrain"`` or ``"downstream"`` dataset."""
        return {"pretrain": dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME),
                "downstream": dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)}[which]

    def folder(self, var: str) -> Path:
        return Path(self.env[var])

    def step(self, extra: str = "") -> None:
        """Announce the next step and close the timing of the previous one."""
        now = time.time() - self.t0
        if self.step_no:
            self.step_seconds[self.step_no] = now - sum(self.step_seconds.values())
        title = self.steps[self.step_no] + extra
        self.step_no += 1
        print(f"[{self.step_no}/{len(self.steps)}] {title}  ({now:.0f} s)", flush=True)

    def run(self, name: str, command: List[str], training: bool = False) -> None:
        """Run an nnU-Net command; its output goes to logs/<name>.log, a failure shows the log's tail."""
        log = self.logs / f"{name}.log"
        print(f"      $ {' '.join(command)}", flush=True)
        start = time.time()
        run_command(command, self.env, log=log, training=training)
        print(f"      done in {time.time() - start:.0f} s (log: {log.relative_to(self.workdir)})", flush=True)

    def result_dir(self, which: str, trainer: str, plans: str) -> Path:
        return trainer_output_folder(self.folder("nnUNet_results"), self.dataset(which), trainer, plans, "3d_fullres")

    # ----------------------------------------------------------------------------------------------
    def prepare_workdir(self, force: bool) -> None:
        """Check the work folder and the nnU-Net folders (UserError before anything is written), then make them."""
        if self.workdir.exists() and not self.workdir.is_dir():
            raise UserError(f"--workdir {self.workdir} is a file, not a folder; pass a new or empty folder.")
        if self.workdir.exists() and any(self.workdir.iterdir()):
            if not (self.workdir / MARKER).exists():
                raise UserError(
                    f"{self.workdir} is not empty and was not made by the demo; choose an empty or new folder "
                    f"with --workdir (the demo never deletes folders it did not create)."
                )
            if not force:
                raise UserError(f"{self.workdir} holds an earlier demo; pass --force to replace it.")
            shutil.rmtree(self.workdir)
        demo_datasets = [self.folder(var) / self.dataset(which) for var in NNUNET_FOLDER_VARIABLES
                         for which in ("pretrain", "downstream")]
        existing = [p for p in demo_datasets if p.exists()]
        if existing and not force:
            raise UserError(f"Demo datasets exist already in your nnU-Net folders: {[str(p) for p in existing]}; "
                            f"pass --force to replace them.")
        for path in existing:
            shutil.rmtree(path)
        make_folder(self.workdir, "pass --workdir a folder you can write to (new or empty)")
        try:
            (self.workdir / MARKER).write_text("made by nnunet-subfore demo\n")
        except OSError as e:
            raise UserError(f"Cannot write into {self.workdir} ({e.strerror or e}): pass --workdir a folder you can "
                            f"write to (new or empty).") from e
        make_folder(self.logs, "pass --workdir a folder you can write to (new or empty)")
        for var in NNUNET_FOLDER_VARIABLES:
            make_folder(self.folder(var), f"set {var} to a folder you can write to, or unset it (the demo then "
                                          f"uses {self.workdir / var})")

    def make_data(self) -> None:
        from nnunet_subfore.data.phantoms import heldout_cases, write_labelled_dataset, write_unlabeled_images
        from nnunet_subfore.data.register import register_unlabeled

        self.step()
        sources = self.workdir / "ct_collection"
        half = self.size.pretrain // 2
        write_unlabeled_images(sources / "scanner_a", half, seed=1000, shape=SHAPE, variety="wide")
        write_unlabeled_images(sources / "scanner_b", self.size.pretrain - half, seed=2000, shape=SHAPE,
                               file_format="mha", variety="wide")
        labelled = write_labelled_dataset(self.folder("nnUNet_raw"), DOWNSTREAM_ID, DOWNSTREAM_NAME, self.size.pool,
                                          num_test=self.size.heldout, seed=3000, shape=SHAPE, variety="narrow",
                                          test_variety="wide", heldout_in_training_folder=True)
        self.heldout = heldout_cases(labelled)
        print(f"      {self.size.pretrain} unlabeled volumes in {sources}; {self.size.pool} labelled training cases "
              f"(narrow variety) and {len(self.heldout)} held-out cases (wide variety: {', '.join(self.heldout)}) "
              f"in {labelled / 'imagesTr'}", flush=True)
        self.step()
        report = register_unlabeled([sources / "scanner_a", sources / "scanner_b"], PRETRAIN_ID, PRETRAIN_NAME,
                                    raw_root=self.folder("nnUNet_raw"), progress=False)
        if report.exit_code() != 0:
            raise UserError(f"Registering the demo CT skipped files: {report.skipped}")

    def plan(self) -> None:
        self.step()
        chain, processes = self.chain, str(max(1, min(self.cores, 8)))
        self.run("plan_pretrain", ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c", "3d_fullres",
                                   "-np", processes, "-npfp", processes, "--verify_dataset_integrity"])
        if chain.tiny_cnn:
            # the stock trainer rebuilds the network from the plans: the tiny CNN lives in a plans preset
            self.run("plans_tiny_cnn", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn",
                                        "--plans-name", chain.pretrain_plans, "--force"])
        # fingerprint + default plans (copies dataset.json); no preprocessing with its own normalization
        self.run("plan_downstream", ["nnUNetv2_plan_and_preprocess", "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres",
                                     "-np", processes, "-npfp", processes, "--no_pp", "--verify_dataset_integrity"])
        self.run("move_plans", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t",
                                str(DOWNSTREAM_ID), "-sp", chain.pretrain_plans, "-tp", chain.downstream_plans])
        self.run("preprocess_downstream", ["nnUNetv2_preprocess", "-d", str(DOWNSTREAM_ID), "-plans_name",
                                           chain.downstream_plans, "-c", "3d_fullres", "-np", processes])

    def pretrain(self) -> Path:
        self.step()
        chain = self.chain
        self.run("pretrain", ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", chain.pretrainer,
                              "-p", chain.pretrain_plans, "-device", "cpu"], training=True)
        return self.result_dir("pretrain", chain.pretrainer, chain.pretrain_plans) / "fold_0" / "checkpoint_final.pth"

    def show_reconstruction(self, checkpoint: Path):
        """``show-reconstruction`` of ``checkpoint`` on the first held-out image: (its result, the PNG)."""
        from nnunet_subfore.demo_reading import reconstruction_reading
        from nnunet_subfore.registry import find_trainer_class
        from nnunet_subfore.reporting.reconstruction_figure import show_reconstruction

        self.step()
        image = self.folder("nnUNet_raw") / self.dataset("downstream") / "imagesTr" / f"{self.heldout[0]}_0000.nii.gz"
        output = self.workdir / RECONSTRUCTION_PNG
        print(f"      (in this process, the same as) $ nnunet-subfore show-reconstruction {checkpoint} {image} "
              f"-o {output}", flush=True)
        result, png = show_reconstruction(checkpoint, [image], output, find_trainer_class)
        print(f"      {reconstruction_reading(result.masked_l1, result.constant_l1)}", flush=True)
        return result, png

    @property
    def encoder_only_checkpoint(self) -> Path:
        """Where :meth:`encoder_only` writes the pretrained arm's start."""
        return self.workdir / "checkpoints" / ENCODER_ONLY_CHECKPOINT

    def encoder_only(self, checkpoint: Path) -> Path:
        """``adapt-checkpoint --encoder-only`` of ``checkpoint`` for the fine-tuning trainer: the pretrained encoder
        and stem, every other tensor as the trainer initializes it (seed 0)."""
        chain = self.chain
        plans = self.folder("nnUNet_preprocessed") / self.dataset("downstream") / f"{chain.downstream_plans}.json"
        output = self.encoder_only_checkpoint
        self.run("encoder_only", ["nnunet-subfore", "adapt-checkpoint", str(checkpoint), "--plans", str(plans), "-c",
                                  "3d_fullres", "-tr", chain.finetuner, "--num-input-channels", "1", "--encoder-only",
                                  "--seed", "0", "-o", str(output)])
        return output

    def label_efficiency(self, pretrained: Path):
        """The pretrained encoder vs scratch at :data:`LABEL_COUNTS` through ``label_efficiency``."""
        from nnunet_subfore.label_efficiency import label_efficiency

        self.step()
        chain, plans = self.chain, self.chain.downstream_plans
        checkpoint = self.encoder_only(pretrained)
        train = f"nnUNetv2_train {DOWNSTREAM_ID} 3d_fullres FOLD -p {plans} -device cpu -tr"
        print(f"      $ {train} {chain.finetuner} -pretrained_weights {checkpoint}\n      $ {train} {chain.scratch}\n"
              f"      (one fold per labelled-case count and seed; every fold's validation cases are the held-out "
              f"cases, which nnU-Net's final validation predicts and scores)", flush=True)
        return label_efficiency(DOWNSTREAM_ID, self.workdir / LABEL_EFFICIENCY_FOLDER, plans=plans,
                                trainer=chain.finetuner, arms=[f"{PRETRAINED_ARM}={checkpoint}"],
                                scratch_trainer=chain.scratch, label_counts=LABEL_COUNTS, seeds=SEEDS,
                                heldout_cases=self.heldout, device="cpu",
                                preprocessed_root=self.folder("nnUNet_preprocessed"), stream=sys.stdout,
                                environment=self.env)

    def report(self, reconstruction, reconstruction_png: Path, result) -> str:
        """Print the table, its reading, notes on arms that learned nothing, and where everything is."""
        from nnunet_subfore.demo_reading import (
            label_efficiency_reading,
            learned_beyond_constant,
            nothing_learned_notes,
            per_label_reading,
        )
        from nnunet_subfore.registry import find_trainer_class

        self.step()
        finetuner = find_trainer_class(self.chain.finetuner)
        iterations = (finetuner.epochs or 0) * (finetuner.iterations_per_epoch or 0) or None
        notes = nothing_learned_notes(result.table, learned_beyond_constant(reconstruction.masked_l1,
                                                                            reconstruction.constant_l1), iterations)
        raw = self.folder("nnUNet_raw") / self.dataset("downstream")
        labels = {str(v): k for k, v in read_dataset_labels(raw).items() if v != 0}
        text = "\n".join([f"\n{result.markdown}", f"Reading: {label_efficiency_reading(result.table)}",
                          f"Per label: {per_label_reading(result.table, labels)}", *notes, ""])
        print(text)
        self.print_locations(reconstruction_png, result)
        return text

    def print_locations(self, reconstruction_png: Path, result) -> None:
        from nnunet_subfore.label_efficiency_runs import RunLayout

        chain, output = self.chain, self.workdir / LABEL_EFFICIENCY_FOLDER
        layout = RunLayout(output, self.dataset("downstream"), chain.downstream_plans, "3d_fullres")
        print("Where everything is:")
        print(f"  nnU-Net folders:   {self.folder('nnUNet_raw')}, {self.folder('nnUNet_preprocessed')}, "
              f"{self.folder('nnUNet_results')}")
        print(f"  pretraining run:   {self.result_dir('pretrain', chain.pretrainer, chain.pretrain_plans)}")
        print(f"  reconstruction:    {reconstruction_png}")
        print(f"  encoder-only:      {self.encoder_only_checkpoint} (the pretrained arm's start)")
        print(f"  label efficiency:  {', '.join(str(p) for p in result.files)}")
        for run_result in result.results:
            print(f"  {run_result.run.describe()}: {layout.fold_folder(run_result.run) / 'validation'} "
                  f"(nnU-Net's predictions of the held-out cases, summary.json)")
        print(f"  logs:              {self.logs}, {output / 'logs'}")
        names = ["data", "registration", "planning", "pretraining", "reconstruction", "label efficiency"]
        spent = ", ".join(f"{name} {self.step_seconds.get(i + 1, 0):.0f} s" for i, name in enumerate(names))
        print(f"Demo finished in {time.time() - self.t0:.0f} s ({spent}). These tiny networks trained for minutes on "
              f"one seed: the numbers show the pipeline, not the method at scale (docs/benchmarks.md).")


def demo_base_environment(cores: int, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This process's environment (or ``base``) with the worker counts the demo runs with, where the user has
    not set them: nnU-Net's export workers and torch's threads sized to ``cores``
    (:func:`nnunet_subfore.label_efficiency.worker_counts`), threads that wait sleeping (:data:`OMP_WAIT_POLICY`)."""
    from nnunet_subfore.label_efficiency import worker_counts

    base = dict(os.environ if base is None else base)
    sized = {k: v for k, v in worker_counts(cores, "cpu").items() if k != "nnUNet_n_proc_DA"}  # training only
    sized["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    return {**sized, **{k: v for k, v in base.items() if v}}


def read_dataset_labels(dataset_folder: Path) -> Dict[str, int]:
    """``labels`` of a raw dataset's ``dataset.json`` (name -> value)."""
    return json.loads((Path(dataset_folder) / "dataset.json").read_text(encoding="utf-8"))["labels"]


def make_folder(path: Path, fix: str) -> None:
    """``mkdir -p``; a folder that cannot be made is a UserError naming it, the reason and the ``fix``."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create {path} ({e.strerror or e}): {fix}.") from e


def run_demo(workdir: Path, force: bool = False, quick: bool = False, backbone: str = DEFAULT_BACKBONE) -> int:
    """Run the demo; ``quick`` writes fewer phantoms and runs the chain's shortest trainers (what the tests run)."""
    demo = Demo(workdir, size=QUICK if quick else FULL, backbone=backbone, quick=quick)
    print(f"nnunet-subfore demo ({demo.chain.title}) in {demo.workdir}; {demo.cores} CPU cores "
          f"(nnUNet_def_n_proc={demo.env['nnUNet_def_n_proc']}, OMP_NUM_THREADS={demo.env.get('OMP_NUM_THREADS')}, "
          f"OMP_WAIT_POLICY={demo.env.get('OMP_WAIT_POLICY')})",
          flush=True)
    demo.prepare_workdir(force)
    demo.make_data()
    demo.plan()
    checkpoint = demo.pretrain()
    reconstruction, png = demo.show_reconstruction(checkpoint)
    result = demo.label_efficiency(checkpoint)
    demo.report(reconstruction, png, result)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("subfore_demo")))
