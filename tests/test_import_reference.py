"""import-reference: the reference's Lightning checkpoints become GQ models, tensors unchanged, no code run.

Synthetic checkpoints in the reference's layout (``state_dict`` with ``encoder.`` / ``decoder.`` / ``loss.``
prefixes, Lightning's wrapper keys, optimizer states, hyper-parameters) are built with random tensors on
small-width presets that use the paper's names; the paper-size name and shape match is checked on the meta
device against the fixtures of the reference's state dicts.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gaussquant.cli import main as cli_main
from gaussquant.reference_checkpoint import (
    REFERENCE_CONFIGS,
    UnsafeCheckpointError,
    check_names_and_shapes,
    import_reference,
    load_reference_checkpoint,
)
from gaussquant.models.presets import ModelConfig, build_encoder_decoder
from gaussquant.pretrained import from_pretrained

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"unet": ModelConfig(arch="unet-tiny", image_size=16), "vit": ModelConfig(arch="vit-tiny", image_size=16)}


def _reference_checkpoint(path: Path, arch: str, *, group: int | None = 8, seed: int = 0) -> OrderedDict:
    """A Lightning checkpoint as the reference writes it, random tensors; returns its state_dict."""
    g = torch.Generator().manual_seed(seed)
    encoder, decoder = build_encoder_decoder(TINY[arch], 32, 16)  # double_z: 2 x 16 channels out
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for prefix, module in (("encoder.", encoder), ("decoder.", decoder)):
        for name, tensor in module.state_dict().items():
            state[prefix + name] = torch.randn(tensor.shape, generator=g)
    state["loss.logvar"] = torch.tensor(0.375)
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4, generator=g)
    optimizer = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(3, generator=g)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    hyper = {"regularizer_config": {"target": "pit.quantization.gaussian.GaussianQuantRegularizer",
                                    "params": {"format": "bchw", "group": group, "n_samples": 65536}},
             "namespace": argparse.Namespace(base=["configs/x.yaml"])} if group else {}
    torch.save({
        "epoch": 3, "global_step": 20002, "pytorch-lightning_version": "2.1.0", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"dirpath": pathlib.PurePosixPath("logs/ckpt")}},
        "optimizer_states": [optimizer, optimizer], "lr_schedulers": [], "hyper_parameters": hyper,
    }, path)
    return state


@pytest.mark.parametrize("arch,config", [("unet", "sd3unet_gq_0.50"), ("vit", "bsqvit_gq_0.50")])
def test_import_keeps_every_tensor_and_writes_a_gq_model(tmp_path, arch, config):
    ckpt = tmp_path / "ref.ckpt"
    state = _reference_checkpoint(ckpt, arch)
    out = import_reference(ckpt, config, tmp_path / "model", model_config=TINY[arch])
    saved = load_file(str(out / "model.safetensors"))
    for key, tensor in state.items():
        if key.startswith(("encoder.", "decoder.")):
            assert torch.equal(saved[key], tensor), key  # every tensor arrives unchanged
    assert not any(k.startswith("loss.") for k in saved)
    meta = json.loads((out / "config.json").read_text())
    assert meta["bottleneck"]["kind"] == "gq" and meta["bottleneck"]["grouping"] == "strided"
    assert meta["bottleneck"]["codebook_dim"] == 8 and meta["bottleneck"]["codebook_size"] == 65536
    assert meta["codebook"]["seed"] == 42 and len(meta["codebook"]["fingerprint"]) == 64
    ref = meta["reference"]
    assert (ref["config"], ref["global_step"], ref["epoch"], ref["learned_logvar"]) == (config, 20002, 3, 0.375)
    model, _ = from_pretrained(out)
    assert model.bottleneck.grouping == "strided" and model.bottleneck.num_groups == 2
    x = torch.zeros(1, 3, 16, 16)
    assert model.encode(x).indices.shape[1 if arch == "unet" else -1] == 2  # two strided groups of 8


def test_loaded_model_whose_grouping_disagrees_with_its_source_is_an_error(tmp_path):
    ckpt = tmp_path / "ref.ckpt"
    _reference_checkpoint(ckpt, "unet")
    out = import_reference(ckpt, "sd3unet_gq_0.50", tmp_path / "model", model_config=TINY["unet"])
    meta = json.loads((out / "config.json").read_text())
    meta["bottleneck"]["grouping"] = "contiguous"
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="from the reference's sd3unet_gq_0.50, which groups channels strided"):
        from_pretrained(out)


def test_paper_presets_match_the_reference_state_dicts_name_for_name():
    for arch, fixture, config in (("unet", "reference_unet_paper_state_dict_shapes.json", "sd3unet_gq_0.25"),
                                  ("vit", "reference_vit_paper_state_dict_shapes.json", "bsqvit_gq_1.00")):
        shapes = json.loads((FIXTURES / fixture).read_text())
        model_cfg = ModelConfig(arch=f"{arch}-paper", image_size=256)
        with torch.device("meta"):
            encoder, decoder = build_encoder_decoder(model_cfg, 32, 16)
            for module, part in ((encoder, "encoder"), (decoder, "decoder")):
                state = {k: torch.empty(s) for k, s in shapes[part].items()}
                check_names_and_shapes(module, state, f"{part} of {config}")  # no error
        assert REFERENCE_CONFIGS[config].preset.startswith(f"{arch}-paper-gq")
    # the UNet's weights against the ViT: every name differs, one sentence says so
    with torch.device("meta"):
        vit_encoder, _ = build_encoder_decoder(ModelConfig(arch="vit-paper", image_size=256), 32, 16)
        unet = {k: torch.empty(s) for k, s in
                json.loads((FIXTURES / "reference_unet_paper_state_dict_shapes.json").read_text())["encoder"].items()}
    with pytest.raises(ValueError, match="152 missing .* belongs to another config"):
        check_names_and_shapes(vit_encoder, unet, "encoder")


def test_every_paper_gq_preset_groups_as_its_reference_config():
    from gaussquant.train.config import load_config

    for cfg in REFERENCE_CONFIGS.values():
        b = load_config(cfg.preset).bottleneck
        assert (b.codebook_dim, b.grouping) == (cfg.group, "strided"), cfg.name
        text = (Path(__file__).resolve().parents[1] / "src/gaussquant/configs" / f"{cfg.preset}.yaml").read_text()
        assert f"configs/{cfg.name}.yaml" in text  # the preset states the config it mirrors


class _RunsCode:
    """Unpickling this would call os.system (or exec) and write the marker file."""

    def __init__(self, marker: Path, via: str) -> None:
        self.marker, self.via = marker, via

    def __reduce__(self):
        if self.via == "system":
            return os.system, (f"echo ran > {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("via", ["system", "exec"])
def test_a_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path, via):
    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.ckpt"
    state = _reference_checkpoint(tmp_path / "good.ckpt", "unet")
    torch.save({"state_dict": state, "hyper_parameters": {"x": _RunsCode(marker, via)}}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="carries code"):
        import_reference(ckpt, "sd3unet_gq_0.50", tmp_path / "model", model_config=TINY["unet"])
    assert not marker.exists() and not (tmp_path / "model").exists()
    assert not any(p.name.startswith(".model") for p in tmp_path.iterdir())


def test_truncated_and_foreign_files_give_one_sentence_and_no_output(tmp_path):
    ckpt = tmp_path / "ref.ckpt"
    _reference_checkpoint(ckpt, "unet")
    data = ckpt.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a PyTorch checkpoint"):
        import_reference(tmp_path / "cut.ckpt", "sd3unet_gq_0.50", tmp_path / "a", model_config=TINY["unet"])
    # a ViT checkpoint imported as a UNet config
    _reference_checkpoint(tmp_path / "vit.ckpt", "vit")
    with pytest.raises(ValueError, match="does not match.*belongs to another config"):
        import_reference(tmp_path / "vit.ckpt", "sd3unet_gq_0.50", tmp_path / "b", model_config=TINY["unet"])
    # the file records group 8 (the 0.5 bpp config) but is imported as 0.25 bpp
    with pytest.raises(ValueError, match="group 8, but sd3unet_gq_0.25 has group 16"):
        import_reference(ckpt, "sd3unet_gq_0.25", tmp_path / "c", model_config=TINY["unet"])
    torch.save({"weights": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no 'state_dict'"):
        load_reference_checkpoint(tmp_path / "plain.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.ckpt", "plain.pt", "ref.ckpt", "vit.ckpt"]


def test_cli_import_reference(tmp_path, capsys):
    ckpt = tmp_path / "ref.ckpt"
    _reference_checkpoint(ckpt, "unet", group=None)
    assert cli_main(["import-reference", str(ckpt), "--config", "sd3unet_gq_0.50", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip()
    # the CLI maps onto the paper preset: the tiny checkpoint does not match, said in one line
    assert err.startswith("gaussquant import-reference: error:") and "\n" not in err and "unet-paper" in err
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):  # argparse: --config must be one of the reference's names
        cli_main(["import-reference", str(ckpt), "--config", "nope", "--out", str(tmp_path / "m")])
    assert "sd3unet_gq_0.25" in capsys.readouterr().err


def test_command_lists_every_reference_config():
    """The torch-free --help module lists exactly the configs the importer knows (breaks if one is added to
    only one of them)."""
    from gaussquant.commands.import_reference import CONFIG_NAMES
    from gaussquant.reference_checkpoint import REFERENCE_CONFIGS

    assert tuple(CONFIG_NAMES) == tuple(REFERENCE_CONFIGS)
