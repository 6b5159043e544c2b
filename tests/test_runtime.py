"""cdfi.runtime: device resolution with and without CUDA (torch.cuda monkeypatched, so both cases run on
any machine), the published --gpu_id fallback note, precision resolution per device, threads, the
shared flags, and the Runtime value itself."""

from __future__ import annotations

import argparse

import pytest
import torch

import cdfi.runtime.precision as precision
from cdfi.runtime import (
    DeviceError,
    PrecisionError,
    Runtime,
    add_runtime_arguments,
    resolve_device,
    resolve_runtime,
)

CPU = torch.device("cpu")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pretend two CUDA GPUs (Ampere); records the devices ``torch.cuda.set_device`` is called with."""
    selected: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: selected[-1] if selected else 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    return selected


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def parse(argv: list[str], **kwargs: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser, **kwargs)
    return parser.parse_args(argv)


# --- devices ----------------------------------------------------------------------------------


def test_auto_without_cuda_is_the_cpu(no_cuda: None, capsys: pytest.CaptureFixture[str]) -> None:
    for device in (None, "auto", " AUTO "):
        assert resolve_device(device) == CPU
    assert resolve_device("cpu") == CPU and resolve_device(torch.device("cpu")) == CPU
    assert capsys.readouterr().err == ""


def test_gpu_id_without_cuda_falls_back_to_the_cpu_with_one_line(
    no_cuda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolve_device("auto", gpu_id=0) == CPU
    assert capsys.readouterr().err == "note: --gpu_id 0: no CUDA GPU available; running on the CPU\n"
    assert resolve_device("auto", gpu_id=3, announce=False) == CPU
    assert capsys.readouterr().err == ""
    runtime = resolve_runtime(parse(["--gpu_id", "1", "--precision", "fp32"]))
    assert runtime == Runtime(CPU, "fp32", None)
    assert capsys.readouterr().err.splitlines() == ["note: --gpu_id 1: no CUDA GPU available; running on the CPU"]


def test_cuda_asked_without_cuda_is_an_error(no_cuda: None) -> None:
    for device in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match=f"--device {device}: no CUDA GPU is available; use --device cpu"):
            resolve_device(device)
    with pytest.raises(DeviceError, match="--gpu_id 0: no CUDA GPU is available; use --device cpu"):
        resolve_device("cuda", gpu_id=0)


def test_devices_with_cuda(two_gpus: list[int]) -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", gpu_id=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", gpu_id=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", gpu_id=0) == torch.device("cuda", 1)  # an explicit index wins
    assert resolve_device("cpu", gpu_id=1) == CPU
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)  # rank 3 of 2 GPUs
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"--gpu_id 2: no such GPU \(2 CUDA GPU\(s\) visible: use 0 to 1"):
        resolve_device("auto", gpu_id=2)
    with pytest.raises(DeviceError, match=r"--device cuda:5: no such GPU"):
        resolve_device("cuda:5")


def test_resolve_runtime_selects_the_gpu(two_gpus: list[int]) -> None:
    runtime = resolve_runtime(parse(["--gpu_id", "1"]))
    assert runtime.device == torch.device("cuda", 1) and runtime.is_cuda and two_gpus == [1]
    assert runtime.precision == "fp32"  # auto on a GPU: fp32 (reduced precision is opt-in there)
    plain = resolve_runtime(parse([]))
    assert plain.device == torch.device("cuda", 1)  # "cuda" becomes the current device, by index
    assert resolve_runtime(parse(["--device", "cuda:0", "--precision", "fp16"])).precision == "fp16"
    assert resolve_runtime(parse(["--device", "cuda:0", "--precision", "bf16"])).precision == "bf16"


def test_bad_device_names(no_cuda: None) -> None:
    with pytest.raises(DeviceError, match="--device nonsense: unknown device; use auto, cpu, cuda or cuda:N"):
        resolve_device("nonsense")
    with pytest.raises(DeviceError, match="device type 'meta' is not supported; use cpu or cuda"):
        resolve_device("meta")
    with pytest.raises(DeviceError, match="--gpu_id -1: must be 0 or more"):
        resolve_device("auto", gpu_id=-1)
    assert issubclass(DeviceError, ValueError) and issubclass(PrecisionError, ValueError)  # exit 2 in run_cli


# --- precision --------------------------------------------------------------------------------


def test_precision_on_the_cpu(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for native, auto in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_runtime(parse(["--device", "cpu"])).precision == auto
        assert resolve_runtime(parse(["--device", "cpu"], precision_default="fp32")).precision == "fp32"
    capsys.readouterr()
    assert resolve_runtime(parse(["--precision", "bf16"])).precision == "fp32"  # no native bf16 here
    assert capsys.readouterr().err == "warning: this CPU has no native bf16 (avx512_bf16/amx_bf16); using fp32\n"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_runtime(parse(["--precision", "bf16"])).precision == "bf16"
    with pytest.raises(PrecisionError, match="fp16 is not supported on the CPU; use fp32 or bf16"):
        resolve_runtime(parse(["--precision", "fp16"]))
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'"):
        resolve_runtime(device="cpu", precision="fp8")


def test_precision_flag_choices_and_defaults() -> None:
    assert parse([]).precision == "auto" and parse([], precision_default="fp32").precision == "fp32"
    assert parse([]).gpu_id is None and parse([], gpu_id_default=0).gpu_id == 0
    assert (parse([]).device, parse([]).threads) == ("auto", None)
    with pytest.raises(SystemExit) as info:
        parse(["--precision", "fp64"])
    assert info.value.code == 2


def test_runtime_value(keep_threads: None) -> None:
    runtime = Runtime(CPU, "bf16", 2)
    assert not runtime.is_cuda and runtime == Runtime(torch.device("cpu"), "bf16", 2)
    with pytest.raises(AttributeError):
        runtime.precision = "fp32"  # type: ignore[misc]
    with pytest.raises(PrecisionError, match="unresolved precision 'auto'"):
        Runtime(CPU, "auto")
    torch.set_num_threads(2)
    assert Runtime(CPU).describe() == "cpu, fp32, 2 threads"
    assert Runtime(torch.device("cuda", 0), "fp16").describe() == "cuda:0, fp16"


def test_runtime_autocast_follows_its_precision() -> None:
    """torch's own result dtypes are the reference: bf16 autocast gives bf16 matmuls, and an fp32 runtime
    inside an enclosing bf16 region really computes in fp32."""
    x = torch.rand(4, 4)
    with Runtime(CPU, "bf16").autocast():
        assert (x @ x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), Runtime(CPU, "fp32").autocast():
        assert (x @ x).dtype == torch.float32


# --- threads ----------------------------------------------------------------------------------


def test_threads(no_cuda: None, keep_threads: None) -> None:
    before = torch.get_num_threads()
    runtime = resolve_runtime(parse(["--device", "cpu", "--precision", "fp32"]))
    assert runtime.threads is None and torch.get_num_threads() == before  # left as torch chose
    runtime = resolve_runtime(parse(["--device", "cpu", "--precision", "fp32", "--threads", "1"]))
    assert runtime.threads == 1 and torch.get_num_threads() == 1
    assert runtime.describe() == "cpu, fp32, 1 thread"
    with pytest.raises(DeviceError, match="--threads 0: must be at least 1"):
        resolve_runtime(parse(["--device", "cpu", "--threads", "0"]))


def test_keywords_without_arguments(no_cuda: None, keep_threads: None) -> None:
    assert resolve_runtime(device="cpu", precision="fp32", threads=1) == Runtime(CPU, "fp32", 1)
    assert resolve_runtime(device=None, precision="fp32").device == CPU
