"""``nnunet-subfore demo``: the whole SubFore chain on built-in synthetic CT, on a CPU, in minutes.

Two chains (``--backbone``): ``cnn`` (default) pretrains and fine-tunes a tiny version of the U-Net
that nnU-Net plans itself (the network nnU-Net users train, fine-tuned with nnU-Net's own recipe);
``swinunetr`` runs the paper's transformer. The steps (:attr:`Demo.STEPS`, printed as they run), shown
for ``swinunetr``:

1. synthetic CT: an unlabeled collection (phantoms, NIfTI and MHA) and a labelled downstream set
   (liver, spleen, kidneys) with held-out cases
2. ``register-unlabeled``: the collection becomes a raw dataset with body labels
3. ``nnUNetv2_plan_and_preprocess`` for the pretraining set; the downstream set takes the
   pretraining plans (``nnUNetv2_move_plans_between_datasets``) so both share one normalization
4. ``nnUNetv2_train ... -tr SubForePretrainTrainer_demo`` (HU foreground MIM)
5. ``nnUNetv2_train ... -tr SubForeSwinUNETRTrainer_demo -pretrained_weights ...`` and the same
   trainer from scratch, on each demo fold
6. ``nnUNetv2_predict`` on the held-out cases, ``nnUNetv2_evaluate_folder``
7. ``nnunet-subfore summarize`` table + plot, and a masking figure

The trainers are the shipped ``_demo`` variants: tiny networks, 32^3 patches, a few epochs. The
numbers show that the pipeline works, not what the method achieves at scale.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
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


class Demo:
    """Runs the demo chain in ``workdir``; every nnU-Net command's output goes to ``workdir/logs``.

    Args:
        workdir: folder for the demo's data, logs and (unless the user set them) nnU-Net folders.
        folds: downstream folds to fine-tune (nnU-Net's 5-fold split; the demo trains a subset).
        num_pretrain: unlabeled CT volumes to pretrain on.
        num_train, num_test: labelled downstream cases for cross-validation / held out.
    """

    def __init__(self, workdir: Path, folds: Sequence[int] = (0, 1), num_pretrain: int = 8,
                 num_train: int = 10, num_test: int = 3, backbone: str = DEFAULT_BACKBONE, quick: bool = False) -> None:
        if backbone not in CHAINS:
            raise UserError(f"--backbone must be one of {sorted(CHAINS)}, got {backbone!r}.")
        self.chain = CHAINS[backbone].for_quick() if quick else CHAINS[backbone]
        self.workdir = Path(workdir).resolve()
        self.folds = [int(f) for f in folds]
        self.num_pretrain, self.num_train, self.num_test = num_pretrain, num_train, num_test
        self.logs = self.workdir / "logs"
        self.env = nnunet_environment([trainer_path()], root=self.workdir, keep_set_folders=True)
        self.step_no, self.t0 = 0, time.time()

    @staticmethod
    def steps_of(chain: DemoChain) -> tuple:
        """The titles of the steps, in the order :func:`run_demo` runs them."""
        return (
            "Synthetic CT: an unlabeled collection (NIfTI + MHA) and a labelled organ set",
            "Register the unlabeled CT with body labels (nnunet-subfore register-unlabeled)",
            "Plan and preprocess; the downstream set takes the pretraining plans",
            f"Pretrain: HU foreground masked image modeling ({chain.pretrainer})",
            f"Fine-tune {chain.title} with the pretrained weights and from scratch",
            "Predict the held-out cases (nnUNetv2_predict) and evaluate them",
            "Summaries: cross-validation table and plot, held-out Dice, masking figure",
        )

    #: The steps of the SwinUNETR chain (every chain has the same seven).
    STEPS = steps_of.__func__(CHAINS["swinunetr"])

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
        """Announce the next of :data:`STEPS`."""
        title = self.steps[self.step_no] + extra
        self.step_no += 1
        print(f"[{self.step_no}/{len(self.steps)}] {title}  ({time.time() - self.t0:.0f} s)", flush=True)

    def run(self, name: str, command: List[str], training: bool = False) -> None:
        """Run an nnU-Net command; its output goes to logs/<name>.log, a failure shows the log's tail."""
        log = self.logs / f"{name}.log"
        print(f"      $ {' '.join(command)}", flush=True)
        start = time.time()
        run_command(command, self.env, log=log, training=training)
        print(f"      done in {time.time() - start:.0f} s (log: {log.relative_to(self.workdir)})", flush=True)

    # ----------------------------------------------------------------------------------------------
    def prepare_workdir(self, force: bool) -> None:
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
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / MARKER).write_text("made by nnunet-subfore demo\n")
        self.logs.mkdir()
        for var in NNUNET_FOLDER_VARIABLES:
            self.folder(var).mkdir(parents=True, exist_ok=True)

    def make_data(self) -> None:
        from nnunet_subfore.data.phantoms import write_labelled_dataset, write_unlabeled_images
        from nnunet_subfore.data.register import register_unlabeled

        self.step()
        sources = self.workdir / "ct_collection"
        half = self.num_pretrain // 2
        write_unlabeled_images(sources / "scanner_a", half, seed=1000, shape=SHAPE)
        write_unlabeled_images(sources / "scanner_b", self.num_pretrain - half, seed=2000, shape=SHAPE,
                               file_format="mha")
        write_labelled_dataset(self.folder("nnUNet_raw"), DOWNSTREAM_ID, DOWNSTREAM_NAME, self.num_train,
                               num_test=self.num_test, seed=3000, shape=SHAPE)
        self.step()
        report = register_unlabeled([sources / "scanner_a", sources / "scanner_b"], PRETRAIN_ID, PRETRAIN_NAME,
                                    raw_root=self.folder("nnUNet_raw"), progress=False)
        if report.exit_code() != 0:
            raise UserError(f"Registering the demo CT skipped files: {report.skipped}")

    def plan(self) -> None:
        self.step()
        chain = self.chain
        self.run("plan_pretrain", ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c", "3d_fullres",
                                   "-np", "2", "-npfp", "2", "--verify_dataset_integrity"])
        if chain.tiny_cnn:
            # the stock trainer rebuilds the network from the plans: the tiny CNN lives in a plans preset
            self.run("plans_tiny_cnn", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn",
                                        "--plans-name", chain.pretrain_plans, "--force"])
        # fingerprint + default plans (copies dataset.json); no preprocessing with its own normalization
        self.run("plan_downstream", ["nnUNetv2_plan_and_preprocess", "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres",
                                     "-np", "2", "-npfp", "2", "--no_pp", "--verify_dataset_integrity"])
        self.run("move_plans", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t",
                                str(DOWNSTREAM_ID), "-sp", chain.pretrain_plans, "-tp", chain.downstream_plans])
        self.run("preprocess_downstream", ["nnUNetv2_preprocess", "-d", str(DOWNSTREAM_ID), "-plans_name",
                                           chain.downstream_plans, "-c", "3d_fullres", "-np", "2"])

    def pretrain(self) -> Path:
        self.step()
        chain = self.chain
        self.run("pretrain", ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", chain.pretrainer,
                              "-p", chain.pretrain_plans, "-device", "cpu"], training=True)
        return self.result_dir("pretrain", chain.pretrainer, chain.pretrain_plans) / "fold_0" / "checkpoint_final.pth"

    def finetune(self, checkpoint: Path) -> None:
        self.step(f", folds {self.folds}")
        for fold in self.folds:
            for trainer, extra in ((self.chain.finetuner, ["-pretrained_weights", str(checkpoint)]),
                                   (self.chain.scratch, [])):
                self.run(f"train_{trainer}_fold{fold}", ["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", str(fold),
                                                         "-tr", trainer, "-p", self.chain.downstream_plans, "-device", "cpu",
                                                         *extra], training=True)

    def predict_and_evaluate(self) -> Dict[str, dict]:
        self.step()
        raw = self.folder("nnUNet_raw") / self.dataset("downstream")
        out: Dict[str, dict] = {}
        for trainer in (self.chain.finetuner, self.chain.scratch):
            pred = self.workdir / "predictions" / trainer
            self.run(f"predict_{trainer}", ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred),
                                            "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres", "-tr", trainer,
                                            "-p", self.chain.downstream_plans, "-f", *map(str, self.folds), "-device", "cpu",
                                            "-npp", "1", "-nps", "1"])
            model = self.result_dir("downstream", trainer, self.chain.downstream_plans)
            self.run(f"evaluate_{trainer}", ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred),
                                             "-djfile", str(model / "dataset.json"), "-pfile", str(model / "plans.json"),
                                             "-np", "1"])
            out[trainer] = json.loads((pred / "summary.json").read_text())
        return out

    def result_dir(self, which: str, trainer: str, plans: str) -> Path:
        return trainer_output_folder(self.folder("nnUNet_results"), self.dataset(which), trainer, plans, "3d_fullres")

    def report(self, test_summaries: Dict[str, dict]) -> str:
        from nnunet_subfore.reporting.masking_figure import draw_masking
        from nnunet_subfore.reporting.summarize import summarize

        self.step()
        chain = self.chain
        result = summarize(dataset=str(DOWNSTREAM_ID), trainers=[chain.finetuner, chain.scratch],
                           plans=chain.downstream_plans,
                           configuration="3d_fullres", folds=tuple(self.folds),
                           output_dir=self.workdir / "summary", results_root=self.folder("nnUNet_results"))
        labels = json.loads((self.folder("nnUNet_raw") / self.dataset("downstream") / "dataset.json").read_text())["labels"]
        names = {str(v): k for k, v in labels.items() if v != 0}
        lines = ["| trainer | " + " | ".join(names.values()) + " | mean |",
                 "|---|" + "---|" * (len(names) + 1)]
        for trainer, summary in test_summaries.items():
            dice = [summary["mean"][key]["Dice"] for key in names]
            lines.append(f"| {trainer} | " + " | ".join(f"{100 * d:.1f}" for d in dice) +
                         f" | {100 * summary['foreground_mean']['Dice']:.1f} |")
        held_out = "\n".join(lines)
        (self.workdir / "summary" / "held_out_dice.md").write_text(held_out + "\n", encoding="utf-8")
        first_image = sorted((self.folder("nnUNet_raw") / self.dataset("pretrain") / "imagesTr").iterdir())[0]
        figure = draw_masking(image=first_image, output=self.workdir / "summary" / "masking.png")
        text = (f"\nCross-validation (nnU-Net validation, folds {self.folds}), Dice:\n\n{result.markdown}\n"
                f"Held-out cases ({self.num_test}, nnUNetv2_predict with folds {self.folds}), Dice %:\n\n{held_out}\n")
        print(text)
        print("Where everything is:")
        print(f"  nnU-Net folders:  {self.folder('nnUNet_raw')}, {self.folder('nnUNet_preprocessed')}, "
              f"{self.folder('nnUNet_results')}")
        print(f"  pretraining run:  {self.result_dir('pretrain', chain.pretrainer, chain.pretrain_plans)}")
        print(f"  fine-tuning runs: {self.result_dir('downstream', chain.finetuner, chain.downstream_plans)}")
        print(f"                    {self.result_dir('downstream', chain.scratch, chain.downstream_plans)}")
        print(f"  predictions:      {self.workdir / 'predictions'}")
        print(f"  tables and plots: {', '.join(str(p) for p in result.files)}")
        print(f"  masking figure:   {figure}")
        print(f"  logs:             {self.logs}")
        print(f"Demo finished in {time.time() - self.t0:.0f} s. These tiny networks trained for seconds: the numbers "
              f"show the pipeline, not the method at scale (docs/benchmarks.md).")
        return text


def run_demo(workdir: Path, force: bool = False, quick: bool = False, folds: Optional[Sequence[int]] = None,
             backbone: str = DEFAULT_BACKBONE) -> int:
    """Run the demo; ``quick`` fine-tunes one fold on fewer cases (what the test suite runs)."""
    if quick:
        demo = Demo(workdir, folds=folds or (0,), num_pretrain=6, num_train=5, num_test=2, backbone=backbone, quick=True)
    else:
        demo = Demo(workdir, folds=folds or (0, 1), backbone=backbone)
    print(f"nnunet-subfore demo ({demo.chain.title}) in {demo.workdir}", flush=True)
    demo.prepare_workdir(force)
    demo.make_data()
    demo.plan()
    checkpoint = demo.pretrain()
    demo.finetune(checkpoint)
    summaries = demo.predict_and_evaluate()
    demo.report(summaries)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("subfore_demo")))
