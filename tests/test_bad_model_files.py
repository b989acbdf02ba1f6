"""Damaged or hand-edited model folders fail with one sentence that names the file (issue 16, items 4-5).

Each case starts from a good ``save_pretrained`` folder of a tiny GQ model and breaks one thing.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from gaussquant.cli import main as cli_main
from gaussquant.convert import to_gaussian_quant
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    torch.manual_seed(0)
    vae = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16),
                            build_bottleneck(GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=4.0)))
    folder = tmp_path_factory.mktemp("good") / "model"
    to_gaussian_quant(vae.eval(), 16).save_pretrained(folder)
    return folder


@pytest.fixture
def model_dir(good_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_model, folder)
    return folder


def one_sentence_naming(err: BaseException, name: str) -> str:
    text = str(err)
    assert "\n" not in text and name in text and "Traceback" not in text, text
    return text


def edit_config(folder, change):
    meta = json.loads((folder / "config.json").read_text())
    meta = change(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def test_the_good_folder_loads(model_dir):
    assert Autoencoder.from_pretrained(model_dir).config.bottleneck.kind == "gq"


def test_one_flipped_byte_in_the_weights_is_caught(model_dir):
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # inside the tensor data, not the header
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(model_dir)
    assert "SHA-256" in one_sentence_naming(info.value, "model.safetensors")


@pytest.mark.parametrize("case", ["no model", "no bottleneck", "model is a list", "a list", "a string"])
def test_config_json_structure(model_dir, case):
    changes = {
        "no model": lambda m: {k: v for k, v in m.items() if k != "model"},
        "no bottleneck": lambda m: {k: v for k, v in m.items() if k != "bottleneck"},
        "model is a list": lambda m: {**m, "model": list(m["model"].values())},
        "a list": lambda m: [m],
        "a string": lambda m: "gaussquant",
    }
    edit_config(model_dir, changes[case])
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(model_dir)
    one_sentence_naming(info.value, "config.json")


@pytest.mark.parametrize("section, key, value, words", [
    ("model", "image_size", "16", "model.image_size = '16' is not of type int"),
    ("model", "arch", 3, "model.arch = 3"),
    ("bottleneck", "codebook_size", 16.5, "bottleneck.codebook_size = 16.5"),
    ("bottleneck", "rule", ["nearest"], "bottleneck.rule"),
    ("bottleneck", "kind", "nope", "unknown bottleneck kind 'nope'"),
    ("model", "arch", "unet-huge", "unknown arch 'unet-huge'"),
    ("bottleneck", "beta", None, "bottleneck.beta = None"),
])
def test_config_json_wrong_types_and_values(model_dir, section, key, value, words):
    edit_config(model_dir, lambda m: {**m, section: {**m[section], key: value}})
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(model_dir)
    assert words in one_sentence_naming(info.value, "config.json")


def test_binary_config_json(model_dir):
    (model_dir / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256)))
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(model_dir)
    assert "binary" in one_sentence_naming(info.value, "config.json")


def test_step_folder_without_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as info:
        Autoencoder.from_pretrained(model_dir)
    assert "no model.safetensors" in one_sentence_naming(info.value, str(model_dir))


def test_fp16_weights_name_the_dtype_not_an_altered_codebook(model_dir, good_model, tmp_path):
    weights = model_dir / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(model_dir)
    text = one_sentence_naming(info.value, "model.safetensors")
    assert "torch.float16" in text and "altered" not in text
    # a model saved in half precision says the same
    Autoencoder.from_pretrained(good_model).half().save_pretrained(tmp_path / "half")
    with pytest.raises(ValueError) as info:
        Autoencoder.from_pretrained(tmp_path / "half")
    text = one_sentence_naming(info.value, "model.safetensors")
    assert "torch.float16" in text and "float32" in text and "altered" not in text


def test_fp16_codebook_in_a_state_dict_names_the_dtype(good_model):
    model = Autoencoder.from_pretrained(good_model)
    state = model.bottleneck.state_dict()
    state["codebook"] = state["codebook"].half()
    with pytest.raises(RuntimeError) as info:
        model.bottleneck.load_state_dict(state)
    assert "float16" in str(info.value) and "altered" not in str(info.value)


def test_the_cli_prints_one_line(model_dir, tmp_path, capsys):
    (model_dir / "config.json").write_text("[1, 2]")
    assert cli_main(["encode", str(model_dir), str(tmp_path), "--out", str(tmp_path / "t.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.json" in err and "Traceback" not in err
    assert not (tmp_path / "t.npz").exists()


def test_config_saved_with_a_renamed_key_still_loads(tmp_path):
    """A config.json written before ``group_dim`` became ``codebook_dim`` loads, with a DeprecationWarning
    (breaks if config_from_meta stops mapping the old key)."""
    model = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16),
                              build_bottleneck(GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=4.0)))
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["bottleneck"]["group_dim"] = meta["bottleneck"].pop("codebook_dim")
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.warns(DeprecationWarning, match="group_dim"):
        loaded = Autoencoder.from_pretrained(tmp_path / "m")
    assert loaded.config.bottleneck.codebook_dim == 4


def test_declared_float16_storage_loads_as_float32_and_is_checked(tmp_path):
    """Weights stored in float16 on purpose (config.json ``weights_dtype``, as the bundled demo model) load
    back as float32; a flipped byte in them is caught by the stored digest, and float16 weights without the
    declaration stay an error (breaks if the upcast skips the digest or accepts undeclared half weights)."""
    from gaussquant.pretrained.files import save_state_safetensors, state_digest

    model = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16),
                              build_bottleneck(GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=4.0)))
    model.save_pretrained(tmp_path / "m", model_card=False)
    half = {k: v.half() for k, v in model.state_dict().items()}
    save_state_safetensors(half, tmp_path / "m" / "model.safetensors")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(ValueError, match="float16"):
        Autoencoder.from_pretrained(tmp_path / "m")  # undeclared half precision
    meta["weights_dtype"], meta["weights_sha256"] = "float16", {"model": state_digest(half)}
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    loaded = Autoencoder.from_pretrained(tmp_path / "m")
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, half[name].float()), name
    half["encoder.conv_in.weight"][0, 0, 0, 0] += 1.0
    save_state_safetensors(half, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="SHA-256"):
        Autoencoder.from_pretrained(tmp_path / "m")
