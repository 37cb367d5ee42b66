"""``nnunet-subfore demo``: the whole SubFore chain on built-in synthetic CT, on a CPU, in minutes.

1. an unlabeled CT collection (phantoms, NIfTI and MHA) -> ``register-unlabeled`` (body labels)
2. a labelled downstream set (liver, spleen, kidneys) with held-out cases
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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_subfore.errors import UserError

PRETRAIN_ID, PRETRAIN_NAME = 991, "SubForeDemoCT"
DOWNSTREAM_ID, DOWNSTREAM_NAME = 992, "SubForeDemoOrgans"
DOWNSTREAM_PLANS = "SubForePretrainPlans"
PRETRAINER = "SubForePretrainTrainer_demo"
FINETUNER = "SubForeSwinUNETRTrainer_demo"
SCRATCH = "SubForeSwinUNETRTrainer_demo_scratch"
MARKER = ".subfore_demo"
SHAPE = (48, 64, 64)


def console_script(name: str) -> str:
    """The path of an installed console script: next to this Python first (an unactivated venv), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"`{name}` not found next to {sys.executable} nor on PATH: is nnunetv2 installed?")
    return found


class Demo:
    """Runs the demo chain in ``workdir``; every nnU-Net command's output goes to ``workdir/logs``.

    Args:
        workdir: folder for the demo's data, logs and (unless the user set them) nnU-Net folders.
        folds: downstream folds to fine-tune (nnU-Net's 5-fold split; the demo trains a subset).
        num_pretrain: unlabeled CT volumes to pretrain on.
        num_train, num_test: labelled downstream cases for cross-validation / held out.
    """

    def __init__(self, workdir: Path, folds: Sequence[int] = (0, 1), num_pretrain: int = 8,
                 num_train: int = 10, num_test: int = 3) -> None:
        self.workdir = Path(workdir).resolve()
        self.folds = [int(f) for f in folds]
        self.num_pretrain, self.num_train, self.num_test = num_pretrain, num_train, num_test
        self.logs = self.workdir / "logs"
        self.env = self._environment()
        self.step_no, self.n_steps, self.t0 = 0, 9, time.time()

    # ----------------------------------------------------------------------------------------------
    def _environment(self) -> Dict[str, str]:
        from nnunet_subfore.cli import trainer_path

        env = dict(os.environ)
        for var, sub in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                         ("nnUNet_results", "nnUNet_results")):
            if not env.get(var):
                env[var] = str(self.workdir / sub)
        ext = [str(trainer_path())] + [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        env["nnUNet_extTrainer"] = os.pathsep.join(dict.fromkeys(ext))
        env.setdefault("nnUNet_def_n_proc", "1")  # nnU-Net's default of 8 export workers swamps 2 cores
        env.setdefault("MPLBACKEND", "Agg")
        return env

    def folder(self, var: str) -> Path:
        return Path(self.env[var])

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"[{self.step_no}/{self.n_steps}] {title}  ({time.time() - self.t0:.0f} s)", flush=True)

    def run(self, name: str, command: List[str], training: bool = False) -> None:
        """Run an nnU-Net command; its output goes to logs/<name>.log, a failure shows the log's tail."""
        env = dict(self.env)
        if training:
            env["nnUNet_n_proc_DA"] = "0"  # in-process data loading (training only: it breaks preprocessing)
        log = self.logs / f"{name}.log"
        print(f"      $ {' '.join(command)}", flush=True)
        start = time.time()
        with open(log, "w", encoding="utf-8") as f:
            result = subprocess.run([console_script(command[0]), *command[1:]], env=env, stdout=f,
                                    stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
            raise UserError(f"`{' '.join(command)}` failed (exit {result.returncode}); log: {log}\n{tail}")
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
        demo_datasets = [self.folder(var) / f"Dataset{i:03d}_{n}"
                         for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
                         for i, n in ((PRETRAIN_ID, PRETRAIN_NAME), (DOWNSTREAM_ID, DOWNSTREAM_NAME))]
        existing = [p for p in demo_datasets if p.exists()]
        if existing and not force:
            raise UserError(f"Demo datasets exist already in your nnU-Net folders: {[str(p) for p in existing]}; "
                            f"pass --force to replace them.")
        for path in existing:
            shutil.rmtree(path)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / MARKER).write_text("made by nnunet-subfore demo\n")
        self.logs.mkdir()
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            self.folder(var).mkdir(parents=True, exist_ok=True)

    def make_data(self) -> None:
        from nnunet_subfore.data.phantoms import write_labelled_dataset, write_unlabeled_images
        from nnunet_subfore.data.register import register_unlabeled

        self.step("Synthetic CT: an unlabeled collection (NIfTI + MHA) and a labelled organ set")
        sources = self.workdir / "ct_collection"
        half = self.num_pretrain // 2
        write_unlabeled_images(sources / "scanner_a", half, seed=1000, shape=SHAPE)
        write_unlabeled_images(sources / "scanner_b", self.num_pretrain - half, seed=2000, shape=SHAPE,
                               file_format="mha")
        write_labelled_dataset(self.folder("nnUNet_raw"), DOWNSTREAM_ID, DOWNSTREAM_NAME, self.num_train,
                               num_test=self.num_test, seed=3000, shape=SHAPE)
        self.step("Register the unlabeled CT with body labels (nnunet-subfore register-unlabeled)")
        report = register_unlabeled([sources / "scanner_a", sources / "scanner_b"], PRETRAIN_ID, PRETRAIN_NAME,
                                    raw_root=self.folder("nnUNet_raw"), progress=False)
        if report.exit_code() != 0:
            raise UserError(f"Registering the demo CT skipped files: {report.skipped}")

    def plan(self) -> None:
        self.step("Plan and preprocess; the downstream set takes the pretraining plans")
        self.run("plan_pretrain", ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c", "3d_fullres",
                                   "-np", "2", "--verify_dataset_integrity"])
        # fingerprint + default plans (copies dataset.json); no preprocessing with its own normalization
        self.run("plan_downstream", ["nnUNetv2_plan_and_preprocess", "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres",
                                     "-np", "2", "--no_pp", "--verify_dataset_integrity"])
        self.run("move_plans", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t",
                                str(DOWNSTREAM_ID), "-sp", "nnUNetPlans", "-tp", DOWNSTREAM_PLANS])
        self.run("preprocess_downstream", ["nnUNetv2_preprocess", "-d", str(DOWNSTREAM_ID), "-plans_name",
                                           DOWNSTREAM_PLANS, "-c", "3d_fullres", "-np", "2"])

    def pretrain(self) -> Path:
        self.step(f"Pretrain: HU foreground masked image modeling ({PRETRAINER})")
        self.run("pretrain", ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", PRETRAINER,
                              "-device", "cpu"], training=True)
        return self.result_dir(PRETRAIN_ID, PRETRAIN_NAME, PRETRAINER, "nnUNetPlans") / "fold_0" / "checkpoint_final.pth"

    def finetune(self, checkpoint: Path) -> None:
        self.step(f"Fine-tune SwinUNETR with the pretrained weights and from scratch, folds {self.folds}")
        for fold in self.folds:
            for trainer, extra in ((FINETUNER, ["-pretrained_weights", str(checkpoint)]), (SCRATCH, [])):
                self.run(f"train_{trainer}_fold{fold}", ["nnUNetv2_train", str(DOWNSTREAM_ID), "3d_fullres", str(fold),
                                                         "-tr", trainer, "-p", DOWNSTREAM_PLANS, "-device", "cpu",
                                                         *extra], training=True)

    def predict_and_evaluate(self) -> Dict[str, dict]:
        self.step("Predict the held-out cases (nnUNetv2_predict) and evaluate them")
        raw = self.folder("nnUNet_raw") / f"Dataset{DOWNSTREAM_ID}_{DOWNSTREAM_NAME}"
        out: Dict[str, dict] = {}
        for trainer in (FINETUNER, SCRATCH):
            pred = self.workdir / "predictions" / trainer
            self.run(f"predict_{trainer}", ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred),
                                            "-d", str(DOWNSTREAM_ID), "-c", "3d_fullres", "-tr", trainer,
                                            "-p", DOWNSTREAM_PLANS, "-f", *map(str, self.folds), "-device", "cpu",
                                            "-npp", "1", "-nps", "1"])
            model = self.result_dir(DOWNSTREAM_ID, DOWNSTREAM_NAME, trainer, DOWNSTREAM_PLANS)
            self.run(f"evaluate_{trainer}", ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred),
                                             "-djfile", str(model / "dataset.json"), "-pfile", str(model / "plans.json"),
                                             "-np", "1"])
            out[trainer] = json.loads((pred / "summary.json").read_text())
        return out

    def result_dir(self, dataset_id: int, name: str, trainer: str, plans: str) -> Path:
        return self.folder("nnUNet_results") / f"Dataset{dataset_id:03d}_{name}" / f"{trainer}__{plans}__3d_fullres"

    def report(self, test_summaries: Dict[str, dict]) -> str:
        from nnunet_subfore.reporting.masking_figure import draw_masking
        from nnunet_subfore.reporting.summarize import summarize

        self.step("Summaries: cross-validation table and plot, held-out Dice, masking figure")
        result = summarize(dataset=str(DOWNSTREAM_ID), trainers=[FINETUNER, SCRATCH], plans=DOWNSTREAM_PLANS,
                           configuration="3d_fullres", folds=tuple(self.folds),
                           output_dir=self.workdir / "summary", results_root=self.folder("nnUNet_results"))
        labels = json.loads((self.folder("nnUNet_raw") / f"Dataset{DOWNSTREAM_ID}_{DOWNSTREAM_NAME}" /
                             "dataset.json").read_text())["labels"]
        names = {str(v): k for k, v in labels.items() if v != 0}
        lines = ["| trainer | " + " | ".join(names.values()) + " | mean |",
                 "|---|" + "---|" * (len(names) + 1)]
        for trainer, summary in test_summaries.items():
            dice = [summary["mean"][key]["Dice"] for key in names]
            lines.append(f"| {trainer} | " + " | ".join(f"{100 * d:.1f}" for d in dice) +
                         f" | {100 * summary['foreground_mean']['Dice']:.1f} |")
        held_out = "\n".join(lines)
        (self.workdir / "summary" / "held_out_dice.md").write_text(held_out + "\n", encoding="utf-8")
        first_image = sorted((self.folder("nnUNet_raw") / f"Dataset{PRETRAIN_ID}_{PRETRAIN_NAME}" / "imagesTr").iterdir())[0]
        figure = draw_masking(image=first_image, output=self.workdir / "summary" / "masking.png")
        text = (f"\nCross-validation (nnU-Net validation, folds {self.folds}), Dice:\n\n{result.markdown}\n"
                f"Held-out cases ({self.num_test}, nnUNetv2_predict with folds {self.folds}), Dice %:\n\n{held_out}\n")
        print(text)
        print("Where everything is:")
        print(f"  nnU-Net folders:  {self.folder('nnUNet_raw')}, {self.folder('nnUNet_preprocessed')}, "
              f"{self.folder('nnUNet_results')}")
        print(f"  pretraining run:  {self.result_dir(PRETRAIN_ID, PRETRAIN_NAME, PRETRAINER, 'nnUNetPlans')}")
        print(f"  fine-tuning runs: {self.result_dir(DOWNSTREAM_ID, DOWNSTREAM_NAME, FINETUNER, DOWNSTREAM_PLANS)}")
        print(f"                    {self.result_dir(DOWNSTREAM_ID, DOWNSTREAM_NAME, SCRATCH, DOWNSTREAM_PLANS)}")
        print(f"  predictions:      {self.workdir / 'predictions'}")
        print(f"  tables and plots: {', '.join(str(p) for p in result.files)}")
        print(f"  masking figure:   {figure}")
        print(f"  logs:             {self.logs}")
        print(f"Demo finished in {time.time() - self.t0:.0f} s. These tiny networks trained for seconds: the numbers "
              f"show the pipeline, not the method at scale (docs/benchmarks.md).")
        return text


def run_demo(workdir: Path, force: bool = False, quick: bool = False, folds: Optional[Sequence[int]] = None) -> int:
    """Run the demo; ``quick`` fine-tunes one fold on fewer cases (what the test suite runs)."""
    if quick:
        demo = Demo(workdir, folds=folds or (0,), num_pretrain=6, num_train=5, num_test=2)
    else:
        demo = Demo(workdir, folds=folds or (0, 1))
    print(f"nnunet-subfore demo in {demo.workdir}", flush=True)
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
