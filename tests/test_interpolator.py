"""The inference API: pairs and batches against direct model calls, 2^k sequences against an explicit
recursion, scene cuts, tiling (plan, blending weights, agreement with untiled), precision, errors, the
typed runtime and options against the keyword shorthand, checkpoints without metadata."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from inference_helpers import example_frames, lively_model, psnr, reference_middle, save_lively

import cdfi.inference.tiling as tiling
from cdfi.inference.ensemble import SelfEnsemble
from cdfi.inference.interpolator import InterpolationError, Interpolator
from cdfi.inference.prealign import Prealigned
from cdfi.inference.stack import InferenceOptions
from cdfi.inference.tiling import bytes_per_pixel, plan_tiles, ramp, tile_starts
from cdfi.io.checkpoint import CheckpointError
from cdfi.runtime import Runtime
from cdfi.runtime.precision import PrecisionError, cpu_has_native_bf16
from models import make_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return lively_model()


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    """Three small frames with motion: the example pair and a shifted copy of the second."""
    a, b = example_frames(40, 56)
    return [a, b, torch.roll(b, shifts=(2, 3), dims=(1, 2))]


def test_pair_and_batch_match_direct_model_calls(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    interp = Interpolator(model, device="cpu", tile=None)
    a, b, c = frames
    ref_ab, ref_bc = reference_middle(model, a, b), reference_middle(model, b, c)
    assert psnr(ref_ab, (a + b) / 2) < 40  # the model really does something other than averaging
    out = interp.interpolate(a, b)
    assert out.shape == a.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref_ab, atol=2e-5, rtol=0)
    batch = interp.interpolate(torch.stack([a, b]), torch.stack([b, c]))
    assert batch.shape == (2, 3, 40, 56)
    torch.testing.assert_close(batch[1], ref_bc, atol=2e-5, rtol=0)
    interp.batch_size = 2
    listed = interp.interpolate_batch([(a, b), (b, c), (c, a)])
    torch.testing.assert_close(listed[0], ref_ab, atol=2e-5, rtol=0)
    torch.testing.assert_close(listed[2], reference_middle(model, c, a), atol=2e-5, rtol=0)


def test_from_checkpoint_detects_variant(tmp_path: Path, model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    path = save_lively(tmp_path / "seeded.pth")
    interp = Interpolator.from_checkpoint(path, device="cpu", tile=None)
    assert interp.variant == "compressed_adacof_F_5_D_1"
    torch.testing.assert_close(
        interp.interpolate(frames[0], frames[1]), reference_middle(model, frames[0], frames[1]), atol=2e-5, rtol=0
    )
    with pytest.raises(CheckpointError, match="cdfi_adacof"):
        Interpolator.from_checkpoint(path, model="cdfi_adacof", device="cpu")


class Average(torch.nn.Module):
    """Stand-in model whose midpoint is the mean, so 2^k recursion gives exact linear blends."""

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        return (frame0 + frame2) / 2


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_sequence_counts_and_order(factor: int, batch_size: int) -> None:
    """With the mean as midpoint, output frame i * factor + k must be a + (b - a) * k / factor."""
    frames = [torch.full((3, 20, 24), v) for v in (0.0, 0.5, 0.25, 1.0)]
    interp = Interpolator(Average(), device="cpu", tile=None, batch_size=batch_size)
    out = list(interp.interpolate_sequence(frames, factor))
    assert len(out) == (len(frames) - 1) * factor + 1
    # Batch 1: one call per new frame. Batch 3 = all three pairs at once: one call per level position.
    assert interp.calls == (3 * (factor - 1) if batch_size == 1 else factor - 1)
    for i, (a, b) in enumerate(itertools.pairwise(frames)):
        assert torch.equal(out[i * factor], a)
        for k in range(1, factor):
            torch.testing.assert_close(out[i * factor + k], a + (b - a) * k / factor, atol=1e-6, rtol=0)
    assert torch.equal(out[-1], frames[-1])


def _recursive(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, factor: int) -> list[torch.Tensor]:
    """Explicit midpoint recursion: the frames strictly between a and b at t = k / factor."""
    if factor == 1:
        return []
    m = reference_middle(model, a, b)
    return [*_recursive(model, a, m, factor // 2), m, *_recursive(model, m, b, factor // 2)]


def test_sequence_matches_explicit_recursion(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    expected = _recursive(model, frames[1], frames[2], 4)
    for batch_size in (1, 2):
        interp = Interpolator(model, device="cpu", tile=None, batch_size=batch_size)
        out = list(interp.interpolate_sequence(frames[1:], 4))
        assert interp.calls == (3 if batch_size == 1 else 2)  # levels of 1 and 2 pairs
        for got, want in zip(out[1:4], expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_scene_cut_copies_frames(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    a, b, _ = frames
    cut = 1 - b  # a different shot
    interp = Interpolator(model, device="cpu", tile=None)
    seen: list[int] = []
    out = list(interp.interpolate_sequence([a, b, cut], 4, scene_threshold=30.0, on_cut=seen.append))
    assert seen == [1]
    assert all(torch.equal(f, b) for f in out[4:6]) and all(torch.equal(f, cut) for f in out[6:9])
    assert not any(torch.equal(f, a) or torch.equal(f, b) for f in out[1:4])
    assert interp.calls == 3


def test_tile_plan_covers_frame_on_aligned_origins() -> None:
    for length, tile, overlap in [(100, 64, 32), (1080, 544, 128), (2160, 544, 128), (97, 128, 32), (161, 96, 0)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and all(s % 32 == 0 for s in starts)
        ends = [min(s + tile, length) for s in starts]
        assert ends[-1] == length
        assert all(e - s2 >= overlap for e, s2 in zip(ends, starts[1:], strict=False))
    with pytest.raises(InterpolationError, match="too small"):
        tile_starts(500, 64, 48)


@pytest.mark.parametrize("length,tile,overlap", [(300, 128, 64), (1080, 544, 128), (161, 96, 32)])
def test_blending_weights_are_a_partition_of_unity(length: int, tile: int, overlap: int) -> None:
    total = torch.zeros(length)
    for s in tile_starts(length, tile, overlap):
        e = min(s + tile, length)
        w = ramp(e - s, s > 0, e < length, overlap)
        assert float(w.min()) >= 0 and float(w.max()) <= 1
        total[s:e] += w
    torch.testing.assert_close(total, torch.ones(length))


def test_tile_at_least_frame_is_exact(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    untiled = Interpolator(model, device="cpu", tile=None).interpolate(frames[0], frames[1])
    big = Interpolator(model, device="cpu", tile=64, overlap=32)
    assert big.tile_size(40, 56) is None
    assert torch.equal(big.interpolate(frames[0], frames[1]), untiled)


def test_tiled_agrees_with_untiled(model: torch.nn.Module) -> None:
    """128x160 in 96 px tiles (2 x 2 tiles): overlap and feathering make the seams vanish."""
    a, b = example_frames(128, 160)
    untiled = Interpolator(model, device="cpu", tile=None).interpolate(a, b)
    tiled = Interpolator(model, device="cpu", tile=96, overlap=32)
    assert len(plan_tiles(128, 160, 96, 32)) == 4
    with_overlap = psnr(tiled.interpolate(a, b), untiled)
    no_overlap = psnr(Interpolator(model, device="cpu", tile=96, overlap=0).interpolate(a, b), untiled)
    assert tiled.calls == 4
    assert with_overlap > 44.0, with_overlap
    assert with_overlap > no_overlap + 2.0, (with_overlap, no_overlap)


def test_auto_tiling_follows_memory_budget(model: torch.nn.Module) -> None:
    a, b = example_frames(96, 128)
    per_px = bytes_per_pixel(model)
    roomy = Interpolator(model, device="cpu", memory_budget=per_px * 96 * 128)
    assert roomy.tile_size(96, 128) is None
    tight = Interpolator(model, device="cpu", memory_budget=per_px * 64 * 64, overlap=32)
    assert tight.tile_size(96, 128) == 128 and tight.tile_size(200, 300) == 128  # MIN_TILE
    assert tight.tile_size(3840, 2160) == 128
    assert Interpolator(model, device="cpu", memory_budget=per_px * 300 * 300).tile_size(2160, 3840) == 288
    assert tight.interpolate(a, b).shape == a.shape


def test_bf16_close_to_fp32(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    fp32 = Interpolator(model, device="cpu", tile=None).interpolate(frames[0], frames[1])
    low = Interpolator(model, device="cpu", tile=None, precision="bf16")
    assert low.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    out = low.interpolate(frames[0], frames[1])
    assert out.dtype == torch.float32
    assert psnr(out, fp32) > 30.0


def test_bad_input_messages(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    interp = Interpolator(model, device="cpu", tile=None)
    a = frames[0]
    with pytest.raises(InterpolationError, match="differ in size: 56x40 vs 57x40"):
        interp.interpolate(a, torch.rand(3, 40, 57))
    with pytest.raises(InterpolationError, match=r"\(3, H, W\)"):
        interp.interpolate(a[:1], a[:1])
    with pytest.raises(InterpolationError, match="float"):
        interp.interpolate((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))
    with pytest.raises(InterpolationError, match="too small"):
        interp.interpolate(torch.rand(3, 12, 40), torch.rand(3, 12, 40))
    with pytest.raises(InterpolationError, match="factor"):
        list(interp.interpolate_sequence(frames, 3))
    with pytest.raises(PrecisionError, match="fp16"):
        Interpolator(model, device="cpu", precision="fp16")
    with pytest.raises(InterpolationError, match="tile"):
        Interpolator(model, device="cpu", tile=16)
    if not torch.cuda.is_available():
        with pytest.raises(InterpolationError, match="no CUDA GPU"):
            Interpolator(model, device="cuda")


def test_odd_sizes_keep_their_shape(model: torch.nn.Module) -> None:
    a, b = example_frames(41, 57)
    out = Interpolator(model, device="cpu", tile=None).interpolate(a, b)
    assert out.shape == (3, 41, 57)
    torch.testing.assert_close(out, reference_middle(model, a, b), atol=2e-5, rtol=0)


class _Exploding(torch.nn.Module):
    """Stand-in model that fails the way an exhausted allocator does (or with another error)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(self.message)


def test_out_of_memory_becomes_a_hint() -> None:
    frame = torch.rand(3, 32, 32)
    oom = Interpolator(
        _Exploding("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), device="cpu", tile=None
    )
    with pytest.raises(InterpolationError, match=r"out of memory on cpu for 1 frame\(s\) of 32x32; use a smaller"):
        oom.interpolate(frame, frame)
    other = Interpolator(_Exploding("shape mismatch"), device="cpu", tile=None)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        other.interpolate(frame, frame)


def test_cpu_memory_budget_follows_available_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8000000 kB\nMemAvailable:   6000000 kB\n")
    assert tiling.available_ram(meminfo) == 6000000 * 1024
    assert tiling.available_ram(tmp_path / "missing") is None
    for kib, budget in ((6_000_000, 6_000_000 * 1024 // 4), (100_000, 1 << 30), (64_000_000, 4 << 30)):
        monkeypatch.setattr(tiling, "available_ram", lambda kib=kib: kib * 1024)
        assert tiling.default_memory_budget(torch.device("cpu")) == budget
    monkeypatch.setattr(tiling, "available_ram", lambda: None)
    assert tiling.default_memory_budget(torch.device("cpu")) == 2 << 30


def test_typed_runtime_and_options_match_the_shorthand(model: torch.nn.Module, frames: list[torch.Tensor]) -> None:
    a, b = frames[0], frames[1]
    typed = Interpolator(model, Runtime(torch.device("cpu"), "fp32"), InferenceOptions(ensemble=2), tile=None)
    short = Interpolator(model, device="cpu", precision="fp32", ensemble=2, tile=None)
    assert typed.runtime == short.runtime == Runtime(torch.device("cpu"), "fp32", None)
    assert typed.options == short.options == InferenceOptions(prealign=False, ensemble=2)
    assert (typed.device, typed.precision, typed.ensemble, typed.prealign) == (torch.device("cpu"), "fp32", 2, False)
    want = (reference_middle(model, a, b) + reference_middle(model, b, a)) / 2
    torch.testing.assert_close(typed.interpolate(a, b), want, atol=2e-3, rtol=0)
    torch.testing.assert_close(typed.interpolate(a, b), short.interpolate(a, b), atol=0, rtol=0)
    assert typed.describe() == "cpu (fp32, self-ensemble of 2)"
    # The stack is the one cdfi.inference.stack builds: ensemble around pre-alignment around the model.
    both = Interpolator(model, device="cpu", options=None, ensemble=4, prealign=True, tile=None)
    assert isinstance(both.net, SelfEnsemble) and isinstance(both.net.model, Prealigned)
    assert both.net.model.model is both.model
    assert Interpolator(model, device="cpu", tile=None).net is Interpolator(model, device="cpu", tile=None).model


def test_shorthand_defaults_and_misuse(model: torch.nn.Module) -> None:
    plain = Interpolator(model, device="cpu", tile=None)
    assert plain.runtime.precision == "fp32" and plain.options == InferenceOptions()
    cpu = Runtime(torch.device("cpu"), "fp32")
    with pytest.raises(TypeError, match="either runtime or device/precision"):
        Interpolator(model, cpu, device="cpu")
    with pytest.raises(TypeError, match="either options or ensemble/prealign"):
        Interpolator(model, cpu, InferenceOptions(), prealign=True)
    with pytest.raises(TypeError, match="runtime must be a cdfi.runtime.Runtime, got str"):
        Interpolator(model, "cpu")  # type: ignore[arg-type]


def test_from_checkpoint_checks_settings_before_reading(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    with pytest.raises(InterpolationError, match="tile 16 is too small"):
        Interpolator.from_checkpoint(missing, device="cpu", tile=16)
    with pytest.raises(InterpolationError, match="batch_size must be >= 1"):
        Interpolator.from_checkpoint(missing, device="cpu", batch_size=0)
    with pytest.raises(PrecisionError, match="fp16"):
        Interpolator.from_checkpoint(missing, device="cpu", precision="fp16")
    with pytest.raises(CheckpointError, match="missing.pth: checkpoint not found"):
        Interpolator.from_checkpoint(missing, runtime=Runtime(torch.device("cpu")))


def test_from_checkpoint_assumes_the_dilation_of_files_without_metadata(
    tmp_path: Path, model: torch.nn.Module, frames: list[torch.Tensor]
) -> None:
    """A bare state dict of F5 weights is D1 by the published rule; ``assume_dilation`` makes it D2."""
    path = tmp_path / "bare.pth"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    d1 = Interpolator.from_checkpoint(path, device="cpu", tile=None)
    d2 = Interpolator.from_checkpoint(path, device="cpu", tile=None, assume_dilation=2)
    assert (d1.variant, d2.variant) == ("compressed_adacof_F_5_D_1", "compressed_adacof_F_5_D_2")
    wide = make_model("compressed_adacof", 5, 2)
    wide.load_state_dict(model.state_dict())
    want = reference_middle(wide.eval(), frames[0], frames[1])
    torch.testing.assert_close(d2.interpolate(frames[0], frames[1]), want, atol=2e-5, rtol=0)
    assert psnr(want, reference_middle(model, frames[0], frames[1])) < 45  # the dilation matters
