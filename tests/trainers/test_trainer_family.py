"""The trainer family: backbones are siblings, variants apart and generated from one table."""

import importlib
import inspect
import pkgutil

import pytest

from nnunet_subfore.backbones import BACKBONES, PLANS_CNN, SWINUNETR, UNETR
from nnunet_subfore.registry import TRAINER_PACKAGE
from nnunet_subfore.trainers.subfore_base import SubForeTrainerBase
from nnunet_subfore.trainers.subfore_mim import SubForeMIMTrainer
from nnunet_subfore.trainers.subfore_supervised import SubForeFinetuneTrainer
from nnunet_subfore.variants import VARIANTS, VARIANTS_BY_NAME

BASES = (SubForeTrainerBase, SubForeMIMTrainer, SubForeFinetuneTrainer)


def all_trainers():
    package = importlib.import_module(TRAINER_PACKAGE)
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{TRAINER_PACKAGE}.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, SubForeTrainerBase) and obj not in BASES:
                found[name] = obj
    return found


def test_no_trainer_inherits_another_backbones_trainer():
    trainers = all_trainers()
    assert len(trainers) >= 26  # 12 shipped + 14 variants
    for name, trainer in trainers.items():
        assert trainer.backbone.name in BACKBONES, name
        for ancestor in trainer.__mro__[1:]:
            if ancestor in trainers.values():
                assert ancestor.backbone is trainer.backbone, f"{name} inherits {ancestor.__name__}"


@pytest.mark.parametrize("name, backbone, mim", [
    ("SubForePretrainTrainer", SWINUNETR, True), ("SubForePretrainTrainer_UNETR", UNETR, True),
    ("SubForeCNNPretrainTrainer", PLANS_CNN, True), ("SubForeRandomMaskCNNPretrainTrainer", PLANS_CNN, True),
    ("SubForeSwinUNETRTrainer", SWINUNETR, False), ("SubForeUNETRTrainer", UNETR, False),
    ("SubForeCNNFinetuneTrainer", PLANS_CNN, False),
])
def test_each_backbone_has_a_pretraining_and_a_finetuning_trainer(name, backbone, mim):
    trainer = all_trainers()[name]
    assert trainer.backbone is backbone
    assert issubclass(trainer, SubForeMIMTrainer) == mim and issubclass(trainer, SubForeFinetuneTrainer) != mim
    expected = backbone.pretraining if mim else backbone.finetuning
    if not name.endswith("_scratch"):
        assert trainer.optimizer_recipe() == expected
    # the names messages suggest exist
    assert set(backbone.trainers) <= set(all_trainers())


def test_variants_are_generated_from_the_table():
    trainers = all_trainers()
    module = importlib.import_module(f"{TRAINER_PACKAGE}.subfore_variants")
    for variant in VARIANTS:
        cls = trainers[variant.name]
        assert cls.__module__ == module.__name__ and cls.__bases__ == (trainers[variant.base],)
        for attribute, value in variant.attributes.items():
            assert getattr(cls, attribute) == value, (variant.name, attribute)
    # the variants live apart from the shipped trainers
    for name, cls in trainers.items():
        assert (cls.__module__ == module.__name__) == (name in VARIANTS_BY_NAME), name


def test_demo_names_only_known_variants():
    from nnunet_subfore.demo import CHAINS

    for chain in CHAINS.values():
        for name in (chain.pretrainer, chain.finetuner, chain.scratch, *(chain.quick_trainers or ())):
            assert name in VARIANTS_BY_NAME, name


def test_variant_families_name_their_own_trainers_in_messages():
    trainers = all_trainers()
    assert trainers["SubForeSwinUNETRTrainer_demo"].trainers_for_backbone()["unetr"] == (
        "SubForeUNETRTrainer_demo", "SubForePretrainTrainer_UNETR_demo")
    assert trainers["SubForeSwinUNETRTrainer"].trainers_for_backbone()["cnn"] == (
        "SubForeCNNFinetuneTrainer", "SubForeCNNPretrainTrainer")
    for suffix in ("", "_demo"):
        for pair in trainers["SubForeCNNTrainer" + (suffix or "_demo")].trainers_for_backbone().values():
            assert set(pair) <= set(trainers), pair
