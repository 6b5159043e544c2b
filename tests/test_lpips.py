"""LPIPS v0.1 against the reference ``lpips`` package with identical (random) backbone weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

lpips_ref = pytest.importorskip("lpips")

from lpips_helpers import reference_lpips as _reference  # noqa: E402
from lpips_helpers import save_backbone_as_torchvision as _save_backbone_as_torchvision  # noqa: E402

from lpips_pytorch import BackboneError, build_lpips, cached_weights_path  # noqa: E402


def _images(seed: int, shape: tuple[int, ...] = (2, 3, 48, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related random batches in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    y = (x + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("net", ["squeeze", "alex", "vgg"])
def test_matches_lpips_package_both_conventions(net: str, tmp_path: Path) -> None:
    reference = _reference(net)
    backbone = tmp_path / f"{net}.pth"
    _save_backbone_as_torchvision(reference, backbone)
    x, y = _images(7)
    with torch.no_grad():
        ours = build_lpips(net, backbone, "published")
        ours_published = ours(x, y)
        ours.convention = "standard"
        ours_standard = ours(x, y)
        ref_published = reference(x, y, normalize=False).flatten()
        ref_standard = reference(x, y, normalize=True).flatten()
    assert ours_published.shape == (2,)
    torch.testing.assert_close(ours_published, ref_published, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours_standard, ref_standard, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ours_published, ours_standard)


def test_identical_images_have_zero_distance(tmp_path: Path) -> None:
    reference = _reference("squeeze")
    _save_backbone_as_torchvision(reference, tmp_path / "b.pth")
    x, _ = _images(3, (1, 3, 32, 32))
    with torch.no_grad():
        assert build_lpips("squeeze", tmp_path / "b.pth")(x, x).item() == pytest.approx(0.0, abs=1e-7)


def test_absent_backbone_is_na_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    assert not cached_weights_path("squeeze").exists()
    assert build_lpips("squeeze", None) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LPIPS n/a" in err[0] and "--lpips_backbone" in err[0]


def test_torchvision_cache_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    target = cached_weights_path("squeeze")
    target.parent.mkdir(parents=True)
    reference = _reference("squeeze")
    _save_backbone_as_torchvision(reference, target)
    x, y = _images(5, (1, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(build_lpips("squeeze")(x, y), reference(x, y).flatten(), rtol=1e-4, atol=1e-6)


def test_bad_backbone_files_raise_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not found"):
        build_lpips("squeeze", tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match="cannot read"):
        build_lpips("squeeze", garbage)
    with pytest.raises(ValueError, match="unknown LPIPS convention"):
        build_lpips("squeeze", garbage, "minus_one_to_one")
    wrong = tmp_path / "alex.pth"
    _save_backbone_as_torchvision(_reference("alex"), wrong)
    with pytest.raises(BackboneError, match="not a squeeze backbone"):
        build_lpips("squeeze", wrong)
