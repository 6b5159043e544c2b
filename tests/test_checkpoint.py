"""Checkpoint I/O: published format, ours, bare state dicts, wrong variants, corrupt files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdfi.io.checkpoint import CheckpointError, load_checkpoint, load_model, load_weights, save_checkpoint
from cdfi.io.paths import MissingCheckpointError, resolve_checkpoint
from models import make_model


@pytest.fixture(scope="module")
def compressed() -> torch.nn.Module:
    torch.manual_seed(1)
    return make_model("compressed_adacof", 5, 1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_published_format_round_trip(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = tmp_path / "compressed_adacof_F_5_D_1.pth"
    torch.save({"epoch": 7, "state_dict": compressed.state_dict()}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 7 and ckpt.is_published_format
    model = load_model(path)
    assert (model.model_name, model.kernel_size, model.dilation, model.sampling) == (
        "compressed_adacof",
        5,
        1,
        "trunc",
    )
    assert not model.training
    assert _same_weights(model, compressed)


def test_bare_state_dict(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = tmp_path / "bare.pth"
    torch.save(compressed.state_dict(), path)
    assert _same_weights(load_model(path), compressed)


def test_our_format_keeps_metadata_published_code_can_read(tmp_path: Path) -> None:
    model = make_model("compressed_adacof", 11, 2, sampling="floor")
    path = save_checkpoint(tmp_path / "ours.pth", model, epoch=3)
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and set(raw["state_dict"]) == set(model.state_dict())
    assert (raw["model"], raw["kernel_size"], raw["dilation"], raw["sampling"]) == ("compressed_adacof", 11, 2, "floor")
    assert "arch" not in raw  # published widths need no spec
    loaded = load_model(path)
    assert loaded.sampling == "floor" and _same_weights(loaded, model)


def test_custom_widths_travel_with_the_checkpoint(tmp_path: Path) -> None:
    from models.arch import published_arch

    spec = published_arch("compressed_adacof", 5, 1)
    spec["encoder"][0] = [8, 8, 8]
    model = make_model("compressed_adacof", 5, 1, arch=spec)
    path = save_checkpoint(tmp_path / "custom.pth", model, epoch=0)
    loaded = load_model(path)
    assert loaded.get_kernel.moduleConv1[0].out_channels == 8
    assert _same_weights(loaded, model)


def test_wrong_variant_is_one_line(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = tmp_path / "c.pth"
    torch.save({"epoch": 1, "state_dict": compressed.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(make_model("cdfi_adacof"), load_checkpoint(path))
    message = str(info.value)
    assert "\n" not in message
    assert "compressed_adacof F5/D1" in message and "cdfi_adacof F11/D2" in message
    with pytest.raises(CheckpointError, match="cdfi_adacof F11/D2 was asked for"):
        load_model(path, name="cdfi_adacof")


def test_sampling_override_warns(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = tmp_path / "pub.pth"
    torch.save({"epoch": 1, "state_dict": compressed.state_dict()}, path)
    with pytest.warns(UserWarning, match="differ from the paper"):
        model = load_model(path, sampling="floor")
    assert model.sampling == "floor"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04broken zip"])
def test_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_checkpoint(path)


def test_missing_checkpoint_message(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(MissingCheckpointError, match="--checkpoint"):
        resolve_checkpoint(tmp_path / "unknown_name.pth")
    with pytest.raises(MissingCheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "CDFI_adacof.pth", explicit=True)


def test_save_is_atomic_and_refuses_overwrite(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = save_checkpoint(tmp_path / "a.pth", compressed, epoch=1)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        save_checkpoint(path, compressed, epoch=2, force=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]  # no temp files left behind


def _saved(path: Path, seed: int, step: int, name: str = "compressed_adacof", sampling: str = "floor") -> Path:
    torch.manual_seed(seed)
    model = make_model(name, 5, 1, sampling=sampling)
    return save_checkpoint(path, model, epoch=1, extra={"step": step})


def test_average_checkpoints_is_the_mean_of_the_weights(tmp_path: Path) -> None:
    import average_checkpoints

    paths = [_saved(tmp_path / f"s{i}.pth", seed=i, step=100 * (i + 1)) for i in range(3)]
    out = tmp_path / "soup.pth"
    assert average_checkpoints.main([*map(str, paths), "--out", str(out)]) == 0
    soup = load_checkpoint(out)
    inputs = [load_checkpoint(p).state_dict for p in paths]
    for key, value in soup.state_dict.items():
        expected = sum(sd[key].double() for sd in inputs) / 3
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-7)
    assert soup.meta["model"] == "compressed_adacof" and soup.meta["sampling"] == "floor"
    assert soup.meta["step"] == 300 and soup.meta["averaged_from"] == ["s0.pth", "s1.pth", "s2.pth"]
    assert load_model(out).sampling == "floor"


def test_average_checkpoints_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import average_checkpoints

    a = _saved(tmp_path / "a.pth", seed=0, step=1)
    b = _saved(tmp_path / "b.pth", seed=1, step=2, sampling="trunc")
    out = tmp_path / "soup.pth"
    cases = [
        ([a, b, "--force"], "sampling"),  # another sampling rule
        ([a, "--force"], "at least two"),
        ([a, tmp_path / "missing.pth", "--force"], "missing.pth"),
        ([a, a], "--force"),  # fine inputs, but the output already exists
    ]
    out.write_bytes(b"keep me")
    for inputs, needle in cases:
        assert average_checkpoints.main([*map(str, inputs), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err, err
        assert out.read_bytes() == b"keep me"
    assert average_checkpoints.main([str(a), str(b), "--out", str(a), "--force"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    torch.manual_seed(0)
    cdfi = save_checkpoint(tmp_path / "cdfi.pth", make_model("cdfi_adacof", 11, 2, sampling="floor"), epoch=0)
    assert average_checkpoints.main([str(a), str(cdfi), "--out", str(tmp_path / "x.pth")]) == 2
    assert "cdfi_adacof_F_11_D_2" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()


def test_metadata_without_kernel_size_is_inferred_from_the_weights(tmp_path: Path, compressed: torch.nn.Module) -> None:
    path = tmp_path / "nok.pth"
    torch.save({"epoch": 1, "state_dict": compressed.state_dict(), "model": "compressed_adacof"}, path)
    model = load_model(path)  # F5 from the kernel head, D1 as published for F5; then every shape is verified
    assert (model.model_name, model.kernel_size, model.dilation) == ("compressed_adacof", 5, 1)
    assert _same_weights(model, compressed)
    torch.save({"epoch": 1, "state_dict": compressed.state_dict(), "model": "foo", "kernel_size": 5}, path)
    with pytest.raises(CheckpointError, match=r"nok\.pth: metadata names unknown model 'foo'"):
        load_model(path)
    bad_arch = {"epoch": 1, "state_dict": compressed.state_dict(), "model": "compressed_adacof", "arch": {"x": 1}}
    torch.save(bad_arch, path)
    with pytest.raises(CheckpointError, match=r"nok\.pth: its architecture spec cannot be built"):
        load_model(path)


def test_weights_that_do_not_fit_name_the_first_difference(tmp_path: Path, compressed: torch.nn.Module) -> None:
    state = compressed.state_dict()
    first, second = list(state)[:2]
    missing = {k: v for k, v in state.items() if k != second}
    extra = {**state, "extra.weight": torch.zeros(1)}
    reshaped = {**state, first: torch.zeros(2, 2)}
    cases = [
        (missing, f"missing key {second}"),
        (extra, "unexpected key extra.weight"),
        (reshaped, f"{first} has shape (2, 2) in the checkpoint but {tuple(state[first].shape)} in the model"),
    ]
    for weights, needle in cases:
        path = save_checkpoint(tmp_path / "bad.pth", compressed, epoch=0)
        raw = torch.load(path, weights_only=True)
        torch.save({**raw, "state_dict": weights}, path)
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        message = str(info.value)
        assert message.startswith(f"{path}: weights do not fit compressed_adacof F5/D1: ")
        assert needle in message and "\n" not in message and "but the model is" not in message


def test_random_bytes_give_a_short_reason(tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: not a PyTorch checkpoint (unpickling failed)"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(path)


def test_a_missing_published_checkpoint_names_the_download_command(tmp_path) -> None:
    """A published file name (the official repository's checkpoints/) gets the fetch command; others do not."""
    with pytest.raises(CheckpointError) as published:
        load_checkpoint(tmp_path / "adacof_F_5_D_1.pth")
    assert str(published.value) == (
        f"{tmp_path / 'adacof_F_5_D_1.pth'}: checkpoint not found; "
        "fetch it with `make weights` (or python checkpoints/download.py adacof_F_5_D_1)"
    )
    with pytest.raises(CheckpointError) as other:
        load_checkpoint(tmp_path / "mine.pth")
    assert str(other.value) == f"{tmp_path / 'mine.pth'}: checkpoint not found"
