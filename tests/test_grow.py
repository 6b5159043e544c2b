"""cdfi.training.grow: a trained AdaCoF-family network copied into a wider one or into CDFI keeps its output."""

from __future__ import annotations

import copy

import pytest
import torch

from cdfi.training.grow import GrowError, grow
from cdfi.training.init import init_he
from models import make_model, published_arch

pytestmark = pytest.mark.usefixtures("one_thread")


def _narrower(spec: dict, by: int = 3) -> dict:
    """``spec`` with every hidden width ``by`` channels smaller, as an AdaCoF-family spec."""
    out = copy.deepcopy(spec)
    out["model"] = "compressed_adacof"
    for key in ("encoder", "decoder"):
        out[key] = [[w - by for w in row] for row in out[key]]
    out["heads"] = {h: [w - by for w in ws] for h, ws in out["heads"].items() if h != "Blend"}
    for key in ("features", "gridnet"):
        out.pop(key, None)
    return out


def _adacof_output(model, f0: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """The occlusion blend of the two warped frames (for CDFI: before its Blend with the GridNet)."""
    with torch.no_grad():
        k = model.get_kernel(f0, f2)
        _, w0, w2 = model.synthesize_parts(f0, f2, k)
    return k["Occlusion"] * w0 + (1 - k["Occlusion"]) * w2


@pytest.mark.parametrize(
    ("target_name", "fs", "ds", "ft", "dt"),
    [("cdfi_adacof", 5, 1, 11, 2), ("compressed_adacof", 3, 2, 7, 1)],
)
def test_widening_and_a_larger_kernel_keep_the_output(target_name: str, fs: int, ds: int, ft: int, dt: int) -> None:
    """Every width grows and each tap moves to another grid position: the output is the source's up
    to float rounding, since the offset shifts are whole pixels and floor sampling is exact bilinear."""
    torch.manual_seed(0)
    target_spec = published_arch(target_name, 11 if target_name == "cdfi_adacof" else 5, 2 if ft == 11 else 1)
    target_spec["kernel_size"], target_spec["dilation"] = ft, dt
    source = make_model("compressed_adacof", fs, ds, arch=_narrower(target_spec), sampling="floor").eval()
    init_he(source, seed=3)
    target = make_model(target_name, ft, dt, arch=target_spec, sampling="floor").eval()
    report = grow(source, target, blend_bias=-40.0, unused_logit=-60.0)
    assert report.exact and report.narrowed == {}
    f0, f2 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = source(f0, f2)
        got = target(f0, f2)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    assert float((expected - (f0 + f2) / 2).abs().mean()) > 1e-3  # the source does warp (not the overlay)


def test_the_shipped_widths_narrow_three_layers_and_load_in_the_published_layout(official_layout: dict) -> None:
    """Compressed AdaCoF F5/D1 into CDFI F11/D2 (the project's own path to a CDFI checkpoint): three
    hidden layers are narrower in CDFI; the grown model still has exactly the published CDFI layout and
    its AdaCoF output stays close to the source's."""
    torch.manual_seed(0)
    source = make_model("compressed_adacof", 5, 1, sampling="floor").eval()
    init_he(source, seed=1)
    target = make_model("cdfi_adacof", sampling="floor").eval()
    report = grow(source, target)
    assert report.narrowed == {"dec2.2": (47, 45), "Beta1.2": (50, 49), "Beta2.2": (50, 49)}
    assert not report.exact
    ref = official_layout["cdfi_adacof_F_11_D_2"]["state_dict"]
    assert {k: list(v.shape) for k, v in target.state_dict().items()} == {k: list(v) for k, v in ref.items()}
    f0, f2 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        src = source(f0, f2)
    err = (_adacof_output(target, f0, f2) - src).abs().mean()
    assert float(err) < 0.1 * float((src - (f0 + f2) / 2).abs().mean())


def test_dropped_channels_are_the_least_weighted() -> None:
    """A narrowed space keeps the source channels whose consumer weights have the largest norm."""
    source = make_model("compressed_adacof", 5, 1).eval()
    conv = source.get_kernel.moduleDeconv2[4]
    with torch.no_grad():
        conv.weight[:, 5].zero_()  # channel 5 of dec2.2 is read by nobody
        conv.weight[:, 30] *= 1e-3
    target = make_model("cdfi_adacof").eval()
    grow(source, target)
    src_first = source.get_kernel.moduleDeconv2[2].weight
    dst_first = target.get_kernel.moduleDeconv2[2].weight
    kept = [c for c in range(47) if c not in (5, 30)]
    torch.testing.assert_close(dst_first, src_first[kept])


def test_bad_sources_are_refused() -> None:
    cdfi = make_model("cdfi_adacof")
    with pytest.raises(GrowError, match="not CDFI"):
        grow(cdfi, make_model("cdfi_adacof"))
    with pytest.raises(GrowError, match="smaller"):
        grow(make_model("compressed_adacof", 11, 2), make_model("compressed_adacof", 5, 1))
    with pytest.raises(GrowError, match="odd number"):
        grow(make_model("compressed_adacof", 5, 1), make_model("compressed_adacof", 6, 2))


def test_grown_cdfi_gridnet_starts_as_the_mean_of_the_warped_frames() -> None:
    """After grow the GridNet synthesis equals (warp0 + warp2) / 2, and every GridNet block still gets
    a gradient from a loss on it (nothing is frozen by the zeroed convs)."""
    torch.manual_seed(0)
    source = make_model("compressed_adacof", 5, 1, sampling="floor")
    init_he(source, seed=1)
    target = make_model("cdfi_adacof", sampling="floor").train()
    grow(source, target)
    f0, f2, gt = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    out = target(f0, f2)
    torch.testing.assert_close(out["context"], (out["warp0"] + out["warp2"]) / 2, atol=1e-6, rtol=0)
    (out["context"] - gt).abs().mean().backward()
    grid = target.context_synthesis
    for name in ("lateral_init", "lateral_0_2", "up_0_1", "lateral_final"):
        assert float(getattr(grid, name).f[-1].weight.grad.abs().sum()) > 0, name
