"""Encoder-only transfer (`adapt-checkpoint --encoder-only`), tensor by tensor, for the CNNs, SwinUNETR and UNETR."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from test_cnn_networks import PLAIN_ARCH, RESENC_ARCH, plans_with

from nnunet_subfore.checkpoints import HEAD_MARKER, spread_input_channels
from nnunet_subfore.cli import main
from nnunet_subfore.networks import CNN_BACKBONE, TINY_ARCHITECTURES, build_network
from nnunet_subfore.plans import derive_tiny_cnn_plans
from nnunet_subfore.registry import build_trainer_network, find_trainer_class
from nnunet_subfore.transfer import TRANSFER_RECORD_KEY, encoder_key_prefixes, is_encoder_key

#: backbone -> (plans architecture, pretraining trainer, fine-tuning trainer)
CASES = {
    "PlainConvUNet": (PLAIN_ARCH, "SubForeCNNPretrainTrainer", "nnUNetTrainer"),
    "ResidualEncoderUNet": (RESENC_ARCH, "SubForeCNNPretrainTrainer", "SubForeCNNFinetuneTrainer"),
    "swinunetr": (PLAIN_ARCH, "SubForePretrainTrainer_demo", "SubForeSwinUNETRTrainer_demo"),
    "unetr": (PLAIN_ARCH, "SubForePretrainTrainer_UNETR_demo", "SubForeUNETRTrainer_demo"),
}


def tiny_plans_file(tmp_path, arch, decoder_convs=None):
    """Tiny CNN plans (32^3 patch; the MONAI demo trainers take the patch and ignore the architecture)."""
    plans = derive_tiny_cnn_plans(plans_with(arch), target_plans="SubForeTinyCNNPlans")
    if decoder_convs is not None:
        plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_conv_per_stage_decoder"] = decoder_convs
    path = tmp_path / f"plans_{decoder_convs}.json"
    path.write_text(json.dumps(plans))
    return path


def pretrained_checkpoint(tmp_path, plans_file, trainer):
    """A pretraining network whose every float tensor is far from any fresh initialization (x3 + 0.1)."""
    source = build_trainer_network(trainer, plans_file, "3d_fullres", 1, seed=1)
    state = {k: (v * 3 + 0.1 if v.is_floating_point() else v.clone()) for k, v in source.network.state_dict().items()}
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": state, "trainer_name": trainer}, path)
    return path, state


def adapt(source, plans_file, trainer, out, *extra, channels=1):
    return main(["adapt-checkpoint", str(source), "--plans", str(plans_file), "-tr", trainer,
                 "--num-input-channels", str(channels), "-o", str(out), *extra])


def test_encoder_prefixes_are_the_backbones_encoders():
    for backbone, expected in (("swinunetr", ("backbone.swinViT.",)), ("unetr", ("backbone.vit.",))):
        net = build_network(backbone, (32, 32, 32), 1, 1, TINY_ARCHITECTURES[backbone])
        assert encoder_key_prefixes(backbone, net) == expected
    with pytest.raises(ValueError, match="'vnet'"):
        encoder_key_prefixes("vnet", torch.nn.Identity())
    with pytest.raises(ValueError, match="does not name its encoder"):
        encoder_key_prefixes(CNN_BACKBONE, torch.nn.Conv3d(1, 1, 1))


@pytest.mark.parametrize("arch, stem", [(PLAIN_ARCH, None), (RESENC_ARCH, "encoder.stem.")],
                         ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_cnn_encoder_includes_the_stem_and_the_decoders_reference_to_the_encoder(arch, stem, tmp_path):
    net = build_trainer_network("nnUNetTrainer", tiny_plans_file(tmp_path, arch), "3d_fullres", 1).network
    prefixes = encoder_key_prefixes(CNN_BACKBONE, net)
    expected = ("encoder.stages.", "decoder.encoder.stages.") + ((stem, "decoder." + stem) if stem else ())
    assert set(prefixes) == set(expected)
    state = net.state_dict()
    encoder_storage = {state[k].data_ptr() for k in state if k.startswith(("encoder.stages.", "encoder.stem."))}
    for key, value in state.items():  # the aliases (same storage) are encoder, the decoder's own modules are not
        assert is_encoder_key(key, prefixes) == (value.data_ptr() in encoder_storage), key


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_from_the_checkpoint_decoder_freshly_initialized(case, tmp_path, capsys):
    arch, pretrainer, finetuner = CASES[case]
    plans_file = tiny_plans_file(tmp_path, arch)
    source, pretrained = pretrained_checkpoint(tmp_path, plans_file, pretrainer)
    out = tmp_path / "encoder_only.pth"
    assert adapt(source, plans_file, finetuner, out, "--encoder-only", "--seed", "7") == 0
    printed = capsys.readouterr().out
    written = torch.load(out, weights_only=True)
    weights = written["network_weights"]

    fresh_target = build_trainer_network(finetuner, plans_file, "3d_fullres", 1, seed=7)
    fresh, other_seed = fresh_target.network.state_dict(), build_trainer_network(
        finetuner, plans_file, "3d_fullres", 1, seed=8).network.state_dict()
    prefixes = encoder_key_prefixes(fresh_target.backbone, fresh_target.network)
    encoder = [k for k in fresh if is_encoder_key(k, prefixes)]
    decoder = [k for k in fresh if not is_encoder_key(k, prefixes) and HEAD_MARKER not in k]
    assert encoder and decoder and set(weights) == set(encoder) | set(decoder)
    for key in encoder:
        assert torch.equal(weights[key], pretrained[key]), key
    for key in decoder:
        assert torch.equal(weights[key], fresh[key]), key
        if pretrained[key].is_floating_point():
            assert not torch.equal(weights[key], pretrained[key]), key
        if weights[key].ndim >= 2 and weights[key].numel() >= 1000:  # conv / linear weights: a fresh init's spread
            std, fresh_std = weights[key].std().item(), other_seed[key].std().item()
            assert std == pytest.approx(fresh_std, rel=0.1), key
            assert pretrained[key].std().item() == pytest.approx(3 * std, rel=0.1), key

    record = written[TRANSFER_RECORD_KEY]
    assert json.loads(json.dumps(record)) == record
    assert record["recipe"] == "encoder-only" and record["seed"] == 7
    assert (record["checkpoint_keys"], record["fresh_keys"]) == (len(encoder), len(decoder))
    assert f"carried over: {len(encoder)} tensors" in printed and "freshly initialized" in printed
    assert f"{len(decoder)} tensors" in printed and "seed 7" in printed

    # nnU-Net's own loader takes it into the fine-tuning network (with its classes), tensor by tensor
    stock = build_trainer_network(finetuner, plans_file, "3d_fullres", 1, num_output_channels=3, seed=3).network
    load_pretrained_weights(stock, str(out))
    loaded = stock.state_dict()
    for key in encoder + decoder:
        assert torch.equal(loaded[key], weights[key]), key


@pytest.mark.parametrize("finetuner", ["SubForeSwinUNETRTrainer_demo", "SubForeUNETRTrainer_demo",
                                       "SubForeCNNFinetuneTrainer"])
def test_subfore_finetuning_trainers_accept_the_encoder_only_checkpoint(finetuner, tmp_path):
    """The fine-tuning trainers' own check (run before nnU-Net's loader) passes and counts the tensors."""
    pretrainer = {"SubForeSwinUNETRTrainer_demo": "SubForePretrainTrainer_demo",
                  "SubForeUNETRTrainer_demo": "SubForePretrainTrainer_UNETR_demo"}.get(finetuner, "SubForeCNNPretrainTrainer")
    plans_file = tiny_plans_file(tmp_path, PLAIN_ARCH)
    source, _ = pretrained_checkpoint(tmp_path, plans_file, pretrainer)
    out = tmp_path / "encoder_only.pth"
    assert adapt(source, plans_file, finetuner, out, "--encoder-only") == 0
    trainer = find_trainer_class(finetuner).__new__(find_trainer_class(finetuner))
    trainer.network = build_trainer_network(finetuner, plans_file, "3d_fullres", 1, num_output_channels=4).network
    trainer.is_ddp = False
    logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: logged.append(" ".join(map(str, args)))
    trainer.check_pretrained_weights(out)
    assert "carried over" in logged[-1] and "MISSING" not in logged[-1]


def test_seed_reproduces_the_fresh_decoder_and_defaults_to_0(tmp_path):
    plans_file = tiny_plans_file(tmp_path, PLAIN_ARCH)
    source, _ = pretrained_checkpoint(tmp_path, plans_file, "SubForeCNNPretrainTrainer")
    runs = {name: tmp_path / f"{name}.pth" for name in ("default", "seed0", "seed1")}
    assert adapt(source, plans_file, "nnUNetTrainer", runs["default"], "--encoder-only") == 0
    assert adapt(source, plans_file, "nnUNetTrainer", runs["seed0"], "--encoder-only", "--seed", "0") == 0
    assert adapt(source, plans_file, "nnUNetTrainer", runs["seed1"], "--encoder-only", "--seed", "1") == 0
    w = {name: torch.load(path, weights_only=True)["network_weights"] for name, path in runs.items()}
    key = "decoder.stages.0.convs.0.conv.weight"
    assert torch.equal(w["default"][key], w["seed0"][key]) and not torch.equal(w["seed0"][key], w["seed1"][key])
    assert torch.equal(w["seed0"]["encoder.stages.1.0.convs.0.conv.weight"],
                       w["seed1"]["encoder.stages.1.0.convs.0.conv.weight"])


def test_without_encoder_only_every_tensor_but_the_heads_comes_from_the_checkpoint(tmp_path, capsys):
    plans_file = tiny_plans_file(tmp_path, PLAIN_ARCH)
    source, pretrained = pretrained_checkpoint(tmp_path, plans_file, "SubForeCNNPretrainTrainer")
    out = tmp_path / "full.pth"
    assert adapt(source, plans_file, "nnUNetTrainer", out) == 0
    written = torch.load(out, weights_only=True)
    assert set(written["network_weights"]) == {k for k in pretrained if HEAD_MARKER not in k}
    for key, value in written["network_weights"].items():
        assert torch.equal(value, pretrained[key]), key
    assert written[TRANSFER_RECORD_KEY]["recipe"] == "full" and written[TRANSFER_RECORD_KEY]["fresh_keys"] == 0
    assert "freshly initialized" not in capsys.readouterr().out
    # --seed only means something for the fresh decoder
    assert adapt(source, plans_file, "nnUNetTrainer", tmp_path / "no.pth", "--seed", "3") == 2
    assert "--encoder-only" in capsys.readouterr().err and not (tmp_path / "no.pth").exists()


def test_encoder_only_needs_the_encoder_to_fit_not_the_decoder(tmp_path, capsys):
    """A checkpoint with another decoder (1 conv per stage): full transfer refuses, encoder-only takes the encoder;
    another encoder is refused either way."""
    source, pretrained = pretrained_checkpoint(tmp_path, tiny_plans_file(tmp_path, PLAIN_ARCH, decoder_convs=[1, 1]),
                                               "SubForeCNNPretrainTrainer")
    plans_file = tiny_plans_file(tmp_path, PLAIN_ARCH)
    assert adapt(source, plans_file, "nnUNetTrainer", tmp_path / "full.pth") == 2
    assert "MISSING" in capsys.readouterr().err
    out = tmp_path / "encoder_only.pth"
    assert adapt(source, plans_file, "nnUNetTrainer", out, "--encoder-only", channels=2) == 0
    weights = torch.load(out, weights_only=True)["network_weights"]
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.equal(weights[stem], spread_input_channels(pretrained[stem], 2))  # the stem still adapts
    assert torch.equal(weights["decoder.encoder." + stem[len("encoder."):]], weights[stem])
    deeper = plans_with(PLAIN_ARCH, patch=(32, 64, 64))
    deeper_file = tmp_path / "deeper.json"
    deeper_file.write_text(json.dumps(deeper))
    assert adapt(source, deeper_file, "nnUNetTrainer", tmp_path / "no.pth", "--encoder-only") == 2
    assert "same plans" in capsys.readouterr().err and not (tmp_path / "no.pth").exists()
