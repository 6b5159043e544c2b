"""AdaCoF-pytorch's config.txt (cdfi.io.adacof_config) and loading its ckpt.pth as the ``adacof`` variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdfi.io.adacof_config import AdacofConfigError, model_options_from_config, read_adacof_config
from cdfi.io.checkpoint import CheckpointError, load_model

# The shipped checkpoint/kernelsize_11/config.txt holds three runs of train.py (abridged here).
SHIPPED_11 = """2019-09-20-09:55:47

model: adc
gpu_id: 1
load: None
loss: 1*Charb+0.01*g_Spatial+0.005*g_Occlusion
lr: 0.001
kernel_size: 9
flow_num: 30

2019-09-23-16:29:39

model: adc
kernel_size: 13
flow_num: 30

2019-09-23-16:30:39

model: adc
out_dir: vimeo_adc_ks9
kernel_size: 11
flow_num: 30

"""


def _write(tmp_path: Path, text: str, name: str = "config.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_last_run_wins_and_dilation_defaults_to_one(tmp_path: Path) -> None:
    path = _write(tmp_path, SHIPPED_11)
    config = read_adacof_config(path)
    assert config["kernel_size"] == 11 and config["dilation"] == 1
    assert config["out_dir"] == "vimeo_adc_ks9" and config["load"] == "None" and config["flow_num"] == "30"
    assert model_options_from_config(path) == (11, 1)


def test_dilation_line_and_windows_line_ends(tmp_path: Path) -> None:
    text = "2020-01-01-00:00:00\r\n\r\nkernel_size: 11\r\ndilation: 2\r\nload: \r\nempty:\r\n"
    path = tmp_path / "config.txt"
    path.write_bytes(text.encode())
    config = read_adacof_config(path)
    assert model_options_from_config(path) == (11, 2)
    assert config["load"] == "" and config["empty"] == ""


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("kernel_size: 5\nthis is not an entry\n", 2, "not a 'key: value' line"),
        ("model: adc\nkernel_size: five\n", 2, "kernel_size is 'five', not a positive integer"),
        ("kernel_size: 5\n\ndilation: 0\n", 3, "dilation is '0', not a positive integer"),
        ("kernel_size=5\n", 1, "not a 'key: value' line"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(AdacofConfigError, match=match) as info:
        read_adacof_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and "\n" not in message


def test_missing_kernel_size_or_file(tmp_path: Path) -> None:
    with pytest.raises(AdacofConfigError, match="no 'kernel_size: N' line"):
        read_adacof_config(_write(tmp_path, "model: adc\ndilation: 1\n"))
    with pytest.raises(AdacofConfigError, match="cannot read AdaCoF config"):
        model_options_from_config(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00kernel")
    with pytest.raises(AdacofConfigError, match=r"binary\.txt: cannot read"):
        read_adacof_config(tmp_path / "binary.txt")


def _adacof_pytorch_state_dict(kernel_size: int) -> dict[str, torch.Tensor]:
    """The keys and shapes of AdaCoF-pytorch's KernelEstimation (models/adacofnet.py), written out here.

    Basic(i, o): 3x3 convs at 0, 2, 4 (i->o, o->o, o->o); Upsample(c): a 3x3 conv at 1; the six
    weight/offset heads: 64->64, 64->64, 64->F*F at 0, 2, 4 and F*F->F*F at 7; occlusion: 64->64 at
    0, 2, 4 and 64->1 at 7. Everything is prefixed ``get_kernel.`` (AdaCoFNet.get_kernel).
    """
    convs: dict[str, tuple[int, int]] = {}
    basics = {"Conv1": (6, 32), "Conv2": (32, 64), "Conv3": (64, 128), "Conv4": (128, 256), "Conv5": (256, 512)}
    basics |= {"Deconv5": (512, 512), "Deconv4": (512, 256), "Deconv3": (256, 128), "Deconv2": (128, 64)}
    for name, (i, o) in basics.items():
        convs |= {f"module{name}.0": (i, o), f"module{name}.2": (o, o), f"module{name}.4": (o, o)}
    for level, c in ((5, 512), (4, 256), (3, 128), (2, 64)):
        convs[f"moduleUpsample{level}.1"] = (c, c)
    taps = kernel_size**2
    for head in ("Weight1", "Alpha1", "Beta1", "Weight2", "Alpha2", "Beta2"):
        convs |= {f"module{head}.0": (64, 64), f"module{head}.2": (64, 64)}
        convs |= {f"module{head}.4": (64, taps), f"module{head}.7": (taps, taps)}
    convs |= {"moduleOcclusion.0": (64, 64), "moduleOcclusion.2": (64, 64), "moduleOcclusion.4": (64, 64)}
    convs["moduleOcclusion.7"] = (64, 1)
    gen = torch.Generator().manual_seed(kernel_size)
    state: dict[str, torch.Tensor] = {}
    for name, (i, o) in convs.items():
        state[f"get_kernel.{name}.weight"] = torch.randn(o, i, 3, 3, generator=gen) * 0.01
        state[f"get_kernel.{name}.bias"] = torch.randn(o, generator=gen) * 0.01
    return state


@pytest.mark.parametrize(("kernel_size", "params"), [(11, 22_933_219)])
def test_adacof_pytorch_ckpt_loads_with_its_config(tmp_path: Path, kernel_size: int, params: int) -> None:
    state = _adacof_pytorch_state_dict(kernel_size)
    assert sum(t.numel() for t in state.values()) == params  # the published adacof F11 parameter count
    ckpt = tmp_path / "ckpt.pth"
    # as AdaCoF-pytorch's trainer saved it with torch 1.2: {'epoch', 'state_dict'}, the legacy format
    torch.save({"epoch": 50, "state_dict": state}, ckpt, _use_new_zipfile_serialization=False)
    k, d = model_options_from_config(_write(tmp_path, SHIPPED_11))
    model = load_model(ckpt, "adacof", k, d, assume_dilation=d)
    assert (model.model_name, model.kernel_size, model.dilation) == ("adacof", 11, 1)
    assert not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    with pytest.raises(CheckpointError, match="adacof F11/D2 weights, but adacof F11/D1 was asked for"):
        load_model(ckpt, "adacof", k, d)  # without the config's dilation the published rule (F11 -> D2) holds
