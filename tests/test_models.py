"""Every published variant against the published layout; outputs in eval and train mode."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cupy_module.reference import adacof_warp_reference
from models import PUBLISHED_VARIANTS, list_models, make_model, variant_name
from models.adacof import pad_to_multiple, spatial_regulariser

VARIANTS = [(name, k, d) for name, pairs in PUBLISHED_VARIANTS.items() for k, d in pairs]


@pytest.mark.parametrize(("name", "k", "d"), VARIANTS, ids=[variant_name(*v) for v in VARIANTS])
def test_state_dict_matches_published_layout(official_layout: dict, name: str, k: int, d: int) -> None:
    ref = official_layout[variant_name(name, k, d)]
    model = make_model(name, k, d)
    sd = model.state_dict()
    assert list(sd) == list(ref["state_dict"])
    assert {key: list(t.shape) for key, t in sd.items()} == ref["state_dict"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == ref["trainable_parameters"]
    # The published checkpoint format loads strictly.
    model.load_state_dict({key: torch.zeros(s) for key, s in ref["state_dict"].items()}, strict=True)


@pytest.mark.parametrize("name", ["adacof", "compressed_adacof", "cdfi_adacof"])
def test_eval_and_train_outputs(name: str) -> None:
    model = make_model(name, 5, 1)
    # A size that is not a multiple of 32 comes back at its own size.
    f0, f2 = torch.rand(2, 3, 37, 45), torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        out = model.eval()(f0, f2)
    assert out.shape == f0.shape
    assert torch.isfinite(out).all()
    result = model.train()(f0, f2)
    own = {"context"} if name == "cdfi_adacof" else {"g_Occlusion"}
    expected = {"frame1", "warp0", "warp2", "g_Spatial"} | own
    assert set(result) == expected
    assert result["frame1"].shape == f0.shape
    assert result["g_Spatial"].dim() == 0 and result["g_Spatial"] > 0


@pytest.mark.parametrize("name", ["compressed_adacof", "cdfi_adacof"])
def test_train_mode_warped_frames_are_the_reference_warps(name: str) -> None:
    """``warp0``/``warp2`` are each padded input warped by its own kernel set (the reference warp); for
    the AdaCoF family the output is their occlusion-weighted sum, for CDFI that sum blended with
    ``context``, the GridNet synthesis."""
    torch.manual_seed(0)
    model = make_model(name, 5, 1, sampling="floor").train()
    f0, f2 = torch.rand(1, 3, 37, 45), torch.rand(1, 3, 37, 45)
    kernels: dict[str, torch.Tensor] = {}
    model.get_kernel.register_forward_hook(lambda module, args, out: kernels.update(out))
    with torch.no_grad():
        result = model(f0, f2)
    p0, p2 = (model.pad_frame(pad_to_multiple(f)) for f in (f0, f2))
    w0 = adacof_warp_reference(p0, kernels["Weight1"], kernels["Alpha1"], kernels["Beta1"], 1, "floor")
    w2 = adacof_warp_reference(p2, kernels["Weight2"], kernels["Alpha2"], kernels["Beta2"], 1, "floor")
    w0, w2 = w0[..., :37, :45], w2[..., :37, :45]
    torch.testing.assert_close(result["warp0"], w0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result["warp2"], w2, atol=1e-5, rtol=1e-5)
    occ = kernels["Occlusion"][..., :37, :45]
    adacof = occ * w0 + (1 - occ) * w2
    if name == "cdfi_adacof":  # the published Blend of the GridNet synthesis with the AdaCoF output
        blend = kernels["Blend"][..., :37, :45]
        adacof = blend * result["context"] + (1 - blend) * adacof
    torch.testing.assert_close(result["frame1"], adacof, atol=1e-5, rtol=1e-5)


def test_list_models() -> None:
    assert list_models() == ["adacof", "cdfi_adacof", "compressed_adacof"]
    with pytest.raises(ValueError, match="unknown model"):
        make_model("rife")


def test_mismatched_frames_raise_clear_error() -> None:
    model = make_model("compressed_adacof").eval()
    with pytest.raises(ValueError, match="frames differ in size"):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 96))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 4, 64, 64), torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 16, 64), torch.rand(1, 3, 16, 64))


def test_padding_is_reflect_bottom_right() -> None:
    x = torch.rand(1, 3, 40, 33)
    padded = pad_to_multiple(x)
    assert padded.shape[-2:] == (64, 64)
    assert torch.equal(padded[..., :40, :33], x)
    # Reflect: row 40 mirrors row 38, column 33 mirrors column 31.
    assert torch.equal(padded[..., 40, :33], x[..., 38, :])
    assert torch.equal(padded[..., :40, 33], x[..., :, 31])


def test_identity_kernels_reproduce_the_overlay() -> None:
    """With all weight on the centre tap, zero offsets and occlusion 0.5, AdaCoF returns (A+C)/2."""
    model = make_model("compressed_adacof", 5, 1).eval()
    f0, f2 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    taps = 25
    centre = torch.zeros(1, taps, 32, 32)
    centre[:, taps // 2] = 1
    zeros = torch.zeros(1, taps, 32, 32)
    k = {
        "Weight1": centre,
        "Alpha1": zeros,
        "Beta1": zeros,
        "Weight2": centre,
        "Alpha2": zeros,
        "Beta2": zeros,
        "Occlusion": torch.full((1, 1, 32, 32), 0.5),
    }
    out = model.synthesize(f0, f2, k)
    torch.testing.assert_close(out, (f0 + f2) / 2)


def test_spatial_regulariser_formula() -> None:
    """g_Spatial against a direct transcription of the published definition."""
    k = {n: torch.rand(2, 9, 6, 7) for n in ("Weight1", "Alpha1", "Beta1", "Weight2", "Alpha2", "Beta2")}

    def charb(d: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.sqrt(d**2 + 1e-6))

    total = 0.0
    for w, o in (("Weight1", "Alpha1"), ("Weight1", "Beta1"), ("Weight2", "Alpha2"), ("Weight2", "Beta2")):
        m = torch.mean(k[w] * k[o], dim=1, keepdim=True)
        total += charb(m[:, :, :, 1:] - m[:, :, :, :-1]) + charb(m[:, :, 1:, :] - m[:, :, :-1, :])
    torch.testing.assert_close(spatial_regulariser(k), torch.as_tensor(total))


def test_cdfi_feature_maps_follow_published_quirk() -> None:
    """The 1x1 convs use padding=1, so every feature map is 2 px larger than its encoder level."""
    model = make_model("cdfi_adacof").eval()
    f = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        k = model.get_kernel(f, f)
    for i in range(1, 6):
        side = 64 // 2 ** (i - 1)
        assert k[f"feature{i}"].shape[-2:] == (side + 2, side + 2)
    assert k["Weight1"].shape[1] == 121
    torch.testing.assert_close(k["Weight1"].sum(1), torch.ones(1, 64, 64))
    assert ((k["Blend"] > 0) & (k["Blend"] < 1)).all()


def test_unpublished_sizes_build() -> None:
    model = make_model("adacof", 7, 1)
    assert model.get_kernel.moduleWeight1[7].out_channels == 49
    assert math.isqrt(model.get_kernel.moduleAlpha2[7].out_channels) == 7
    out = model.eval()(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)


def test_warp_and_model_agree_on_a_shift() -> None:
    """A one-tap kernel with a whole-pixel offset moves the frame by that many pixels."""
    model = make_model("compressed_adacof", 5, 1)
    frame = torch.rand(1, 3, 32, 32)
    p = model.pad_frame(frame)
    w = torch.zeros(1, 25, 32, 32)
    w[:, 12] = 1
    alpha = torch.full((1, 25, 32, 32), 1.0)
    beta = torch.full((1, 25, 32, 32), -1.0)
    out = model.warp(p, w, alpha, beta)
    shifted = F.pad(frame, (1, 1, 1, 1), mode="replicate")[..., 2:, :-2]
    torch.testing.assert_close(out, shifted)


def test_cdfi_batched_warps_equal_one_call_per_tensor() -> None:
    """The batched warp of frame + features equals the published one-call-per-tensor path."""
    fast = make_model("cdfi_adacof").eval()
    legacy = make_model("cdfi_adacof", legacy_grad=True).eval()
    legacy.load_state_dict(fast.state_dict())
    f0, f2 = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(f0, f2), legacy(f0, f2))
