"""Loss strings against hand-computed references: parsing, Charbonnier/L1/MSE, regularisers, VGG16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cdfi.training.losses import (
    VGG16_FILE,
    CompositeLoss,
    LossSpecError,
    LossTerm,
    VGGWeightsError,
    charbonnier,
    parse_loss,
)
from models import make_model

# torchvision's VGG16 ``features`` indices of the convolutions inside the first 22 modules, with
# (in, out) channels, and the indices after which a 2x2 max-pool follows.
VGG_CONVS = {
    0: (3, 64),
    2: (64, 64),
    5: (64, 128),
    7: (128, 128),
    10: (128, 256),
    12: (256, 256),
    14: (256, 256),
    17: (256, 512),
    19: (512, 512),
    21: (512, 512),
}
VGG_POOL_AFTER = (2, 7, 14)


def test_parse_published_string() -> None:
    assert parse_loss("1*Charb+0.01*g_Spatial+0.005*VGG") == [
        LossTerm(1.0, "Charb"),
        LossTerm(0.01, "g_Spatial"),
        LossTerm(0.005, "VGG"),
    ]
    assert parse_loss(" 2e-3 * L1 + 1*MSE ") == [LossTerm(0.002, "L1"), LossTerm(1.0, "MSE")]


@pytest.mark.parametrize("spec", ["", "Charb", "1*Foo", "1*Charb+", "1*Charb+2*Charb", "x*L1"])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(LossSpecError):
        parse_loss(spec)


def test_weighted_sum_matches_numpy() -> None:
    out, gt = torch.rand(2, 3, 8, 9), torch.rand(2, 3, 8, 9)
    reg = torch.tensor(0.37)
    total, parts = CompositeLoss("0.5*Charb+2*L1+3*MSE+0.1*g_Spatial")({"frame1": out, "g_Spatial": reg}, gt)
    d = out.double().numpy() - gt.double().numpy()
    charb = np.mean(np.sqrt(d**2 + 1e-3**2))
    expected = 0.5 * charb + 2 * np.abs(d).mean() + 3 * (d**2).mean() + 0.1 * 0.37
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert parts["Charb"] == pytest.approx(charb, rel=1e-5)
    assert float(charbonnier(out, out)) == pytest.approx(1e-3, rel=1e-4)


def test_warp_term_is_the_mean_charbonnier_of_the_two_warped_frames() -> None:
    torch.manual_seed(0)
    gt, w0, w2, frame = (torch.rand(2, 3, 8, 9) for _ in range(4))
    total, parts = CompositeLoss("0.5*Warp")({"frame1": frame, "warp0": w0, "warp2": w2}, gt)
    side = [float(np.sqrt((w.numpy().astype(np.float64) - gt.numpy()) ** 2 + 1e-6).mean()) for w in (w0, w2)]
    assert parts["Warp"] == pytest.approx((side[0] + side[1]) / 2, rel=1e-5)
    assert float(total) == pytest.approx(0.25 * (side[0] + side[1]), rel=1e-5)
    with pytest.raises(LossSpecError, match="warp0/warp2"):
        CompositeLoss("1*Warp")(frame, gt)


def test_context_term_is_the_charbonnier_of_the_gridnet_synthesis() -> None:
    torch.manual_seed(1)
    gt, context, frame = (torch.rand(2, 3, 8, 9) for _ in range(3))
    total, parts = CompositeLoss("2*Context")({"frame1": frame, "context": context}, gt)
    expected = float(np.sqrt((context.numpy().astype(np.float64) - gt.numpy()) ** 2 + 1e-6).mean())
    assert parts["Context"] == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(2 * expected, rel=1e-5)
    with pytest.raises(LossSpecError, match="context"):
        CompositeLoss("1*Context")({"frame1": frame, "warp0": frame, "warp2": frame}, gt)


def test_regulariser_must_come_from_the_model() -> None:
    model = make_model("cdfi_adacof").train()
    with torch.no_grad():
        names = tuple(model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)))
    CompositeLoss("1*Charb+0.01*g_Spatial").check_model_outputs(names)
    with pytest.raises(LossSpecError, match="g_Occlusion"):
        CompositeLoss("1*Charb+0.01*g_Occlusion").check_model_outputs(names, "cdfi_adacof")


def test_vgg_without_weights_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(VGGWeightsError, match="--vgg_weights"):
        CompositeLoss("1*Charb+0.005*VGG")
    with pytest.raises(VGGWeightsError, match="not found"):
        CompositeLoss("1*VGG", vgg_weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(VGGWeightsError, match="not VGG16 weights"):
        CompositeLoss("1*VGG", vgg_weights=bad)


def _reference_vgg_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VGG16 ``features[:22]`` written out with functional ops (independent of torchvision's builder): the
    slice ends with conv4_3 itself, its ReLU being module 22. The frames go in unnormalised, as the
    published loss feeds them."""
    for idx in sorted(VGG_CONVS):
        x = F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1)
        if idx != max(VGG_CONVS):
            x = F.relu(x)
        if idx in VGG_POOL_AFTER:
            x = F.max_pool2d(x, 2)
    return x


def test_vgg_term_from_torchvision_cache(tmp_path, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(3)
    state = {}
    for idx, (cin, cout) in VGG_CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=gen) * 0.01
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / VGG16_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    loss = CompositeLoss("1*VGG")
    out = torch.rand(1, 3, 32, 32, requires_grad=True)
    gt = torch.rand(1, 3, 32, 32)
    total, _ = loss({"frame1": out}, gt)
    with torch.no_grad():
        expected = F.mse_loss(_reference_vgg_features(state, out), _reference_vgg_features(state, gt))
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-4)
    total.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.vgg.parameters())
