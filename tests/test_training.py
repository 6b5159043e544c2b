"""train.py and cdfi.training.trainer on tiny synthetic Vimeo-layout sets: every family trains, resume is exact,
DDP equals one process, NaN keeps the last good checkpoint, the issue-11 options do what they claim."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from torch import nn
from torch.utils.data import DataLoader

import train
from cdfi.io.checkpoint import load_checkpoint, load_model, save_checkpoint
from cdfi.io.images import read_image
from cdfi.training.losses import CompositeLoss, charbonnier, gaussian_blur
from cdfi.training.run_log import RunLog
from cdfi.training.setup import apply_recipe
from cdfi.training.trainer import (
    BlurredWarp,
    FlowWarmStart,
    MotionDistillation,
    NonFiniteLossError,
    ResumableSampler,
    Trainer,
    TrainingError,
    build_optimizer,
    init_blend,
    init_he,
    init_offsets,
    init_weight_temperature,
    parameter_groups,
)
from cupy_module import adacof_warp
from datasets.vimeo import VimeoTriplets
from models import make_model

REPO = Path(__file__).resolve().parent.parent
W, H = 48, 32
LOSS = "1*Charb+0.01*g_Spatial+0.005*g_Occlusion"


pytestmark = pytest.mark.usefixtures("one_thread")


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((small.shape[1] * 4, small.shape[0] * 4), Image.BICUBIC))


def make_set(root: Path, count: int = 4, w: int = W, h: int = H, shift: int = 1, test: int = 0) -> Path:
    """``count`` training (+ ``test`` test) triplets of textures moving ``shift`` px left per frame."""
    rng = np.random.default_rng(7)
    entries = []
    for i in range(count + test):
        tex = _texture(rng, w + 4 * shift + 4, h + 4)
        entry = f"00001/{i + 1:04d}"
        folder = root / "sequences" / entry
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.ascontiguousarray(tex[2 : 2 + h, k * shift : k * shift + w])).save(
                folder / f"im{k + 1}.png"
            )
        entries.append(entry)
    (root / "tri_trainlist.txt").write_text("".join(f"{e}\n" for e in entries[:count]))
    (root / "tri_testlist.txt").write_text("".join(f"{e}\n" for e in entries[count:]))
    return root


def cli_args(tmp_path: Path, data: Path | None = None, uid: str = "run") -> list[str]:
    """The train.py flags every test run shares: a tiny compressed AdaCoF, no Middlebury, no progress bars."""
    return [
        "--data_dir",
        str(data or tmp_path / "data"),
        "--out_root",
        str(tmp_path / "mw"),
        "--uid",
        uid,
        "--workers",
        "0",
        "--quiet",
        "--test_every",
        "0",
        "--loss",
        LOSS,
        "--model",
        "compressed_adacof",
    ]


def run_cli(tmp_path: Path, *extra: str, data: Path | None = None, uid: str = "run") -> int:
    return train.main([*cli_args(tmp_path, data, uid), *extra])


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("model", "loss"),
    [("compressed_adacof", LOSS), ("adacof", LOSS), ("cdfi_adacof", "1*Charb+0.01*g_Spatial")],
)
def test_one_epoch_for_each_family(tmp_path, model: str, loss: str) -> None:
    make_set(tmp_path / "data")
    assert run_cli(tmp_path, "--model", model, "--loss", loss, "--epochs", "1", "--batch_size", "2") == 0
    run = tmp_path / "mw" / "run"
    assert {p.name for p in run.iterdir()} >= {"args.json", "log.txt", "loss.csv", "curves.png", "checkpoints"}
    last = load_checkpoint(run / "checkpoints" / "last.pth")
    assert (last.epoch, last.meta["step"], last.meta["model"]) == (1, 2, model)
    assert load_model(run / "checkpoints" / "best.pth").model_name == model
    assert [int(r["step"]) for r in _csv(run / "loss.csv")] == [1, 2]


def test_run_log_keeps_rows_up_to_the_resumed_step(tmp_path) -> None:
    """Reopening for a resume drops the rows past the resumed step and appends after the rest; a fresh start
    empties the CSVs; log.txt only grows."""
    with RunLog(tmp_path, ["Charb", "g_Spatial"], None) as log:
        for step in range(1, 5):
            log.loss.append({"step": step, "epoch": 1, "loss": step / 10, "Charb": 0.1, "ignored": "x"})
            log.val.append({"step": step, "psnr": 30 + step})
        log.line("first")
    with RunLog(tmp_path, ["Charb", "g_Spatial"], 2) as log:
        log.loss.append({"step": 3, "loss": 0.5})
        log.line("second")
    header, *lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert header == "step,epoch,minutes,lr,loss,Charb,g_Spatial,extra"
    assert [r["step"] for r in _csv(tmp_path / "loss.csv")] == ["1", "2", "3"]
    assert lines[0] == "1,1,,,0.1,0.1,," and lines[2] == "3,,,,0.5,,,"
    assert [r["psnr"] for r in _csv(tmp_path / "val.csv")] == ["31", "32"]
    assert [line.split(" ", 2)[2] for line in (tmp_path / "log.txt").read_text().splitlines()] == ["first", "second"]
    RunLog(tmp_path, ["Charb"], None).close()
    assert _csv(tmp_path / "loss.csv") == [] and _csv(tmp_path / "val.csv") == []


def test_epoch_evaluation_scores_best_checkpoint(tmp_path) -> None:
    """Per-epoch Middlebury PSNR in eval.csv equals skimage's PSNR of best.pth's 8-bit prediction."""
    make_set(tmp_path / "data")
    mb = make_set(tmp_path / "mb", count=0, test=2)
    inp, gt = tmp_path / "mb_in", tmp_path / "mb_gt"
    for i, entry in enumerate(["00001/0001", "00001/0002"]):
        src = mb / "sequences" / entry
        (inp / f"seq{i}").mkdir(parents=True)
        (gt / f"seq{i}").mkdir(parents=True)
        (src / "im1.png").rename(inp / f"seq{i}" / "frame10.png")
        (src / "im3.png").rename(inp / f"seq{i}" / "frame11.png")
        (src / "im2.png").rename(gt / f"seq{i}" / "frame10i11.png")
    args = ("--epochs", "1", "--batch_size", "2", "--test_every", "1", "--test_input", str(inp), "--test_gt", str(gt))
    assert run_cli(tmp_path, *args) == 0
    row = _csv(tmp_path / "mw" / "run" / "eval.csv")[0]
    model = load_model(tmp_path / "mw" / "run" / "checkpoints" / "best.pth")
    scores = []
    for i in range(2):
        a, c = read_image(inp / f"seq{i}" / "frame10.png"), read_image(inp / f"seq{i}" / "frame11.png")
        with torch.no_grad():
            pred = model(a[None], c[None])[0]
        pred8 = (pred.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy() / 255
        truth = read_image(gt / f"seq{i}" / "frame10i11.png").permute(1, 2, 0).double().numpy()
        scores.append(peak_signal_noise_ratio(truth, pred8, data_range=1))
    assert float(row["psnr"]) == pytest.approx(np.mean(scores), abs=1e-6)


def test_resume_continues_exactly(tmp_path) -> None:
    """6 steps straight == 3 steps, stop (mid-epoch), resume, 3 more: random crops, flips, an lr step."""
    make_set(tmp_path / "data")
    common = ("--batch_size", "1", "--epochs", "2", "--crop", "32", "--lr_decay", "1", "--steps_per_checkpoint", "2")
    assert run_cli(tmp_path, *common, "--max_steps", "6", uid="straight") == 0
    assert run_cli(tmp_path, *common, "--max_steps", "3", uid="split") == 0
    assert load_checkpoint(tmp_path / "mw" / "split" / "checkpoints" / "last.pth").meta["step"] == 3
    assert run_cli(tmp_path, *common, "--max_steps", "6", "--resume", uid="split") == 0
    a = load_checkpoint(tmp_path / "mw" / "straight" / "checkpoints" / "last.pth")
    b = load_checkpoint(tmp_path / "mw" / "split" / "checkpoints" / "last.pth")
    assert (a.meta["step"], a.epoch) == (b.meta["step"], b.epoch) == (6, 1)
    for key, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[key], value, rtol=0, atol=1e-6)
    assert a.meta["scheduler"]["last_epoch"] == b.meta["scheduler"]["last_epoch"] == 1
    loss_a = [float(r["loss"]) for r in _csv(tmp_path / "mw" / "straight" / "loss.csv")]
    loss_b = [float(r["loss"]) for r in _csv(tmp_path / "mw" / "split" / "loss.csv")]
    assert loss_b == pytest.approx(loss_a, abs=1e-6) and len(loss_a) == 6


def test_ddp_two_cpu_processes_match_one_process(tmp_path) -> None:
    """torchrun with 2 gloo processes of batch 1 == one process of batch 2 (gradients are averaged)."""
    make_set(tmp_path / "data")
    common = ("--batch_size", "2", "--epochs", "1", "--no_augment")
    assert run_cli(tmp_path, *common, uid="single") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "train.py", *cli_args(tmp_path, uid="ddp"), *common]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = load_checkpoint(tmp_path / "mw" / "single" / "checkpoints" / "last.pth")
    ddp = load_checkpoint(tmp_path / "mw" / "ddp" / "checkpoints" / "last.pth")
    assert ddp.meta["step"] == single.meta["step"] == 2
    for key, value in single.state_dict.items():
        torch.testing.assert_close(ddp.state_dict[key], value, rtol=0, atol=2e-5)
    torch.manual_seed(1)  # train.py's default --seed: the weights both runs started from
    start = make_model("compressed_adacof").state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in single.state_dict.items())


def _trainer(tmp_path: Path, data: VimeoTriplets, loss: str = LOSS, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = make_model("compressed_adacof")
    sampler = ResumableSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=kwargs.pop("batch_size", 2), sampler=sampler, drop_last=True)
    optimizer = build_optimizer("ADAMax", model.parameters(), kwargs.pop("lr", 1e-3))
    return Trainer(
        model,
        optimizer,
        loader,
        kwargs.pop("loss_fn", CompositeLoss(loss)),
        checkpoint_path=tmp_path / "last.pth",
        progress=False,
        **kwargs,
    )


def test_loss_decreases_when_overfitting_two_triplets(tmp_path) -> None:
    data = VimeoTriplets(make_set(tmp_path / "data", count=2), augment=False)
    losses: list[float] = []
    trainer = _trainer(tmp_path, data, "1*L1", lr=2e-3, on_step=lambda tr, parts: losses.append(parts["loss"]))
    trainer.fit(epochs=25)
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < 0.7 * losses[0]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    data = VimeoTriplets(make_set(tmp_path / "data"), augment=False)
    criterion = CompositeLoss(LOSS)
    calls = [0]

    def poisoned(output, target):
        calls[0] += 1
        total, parts = criterion(output, target)
        return (total * float("nan"), parts) if calls[0] == 3 else (total, parts)

    trainer = _trainer(tmp_path, data, loss_fn=poisoned, batch_size=1, steps_per_checkpoint=1)
    snapshot = {}
    trainer.on_step = lambda tr, parts: snapshot.update({k: v.clone() for k, v in tr.model.state_dict().items()})
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.fit(epochs=1)
    saved = load_checkpoint(tmp_path / "last.pth")
    assert saved.meta["step"] == 2 and trainer.step == 2
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshot[key]) and torch.equal(saved.state_dict[key], value)


def test_bad_input_stops_before_work(tmp_path, capsys, monkeypatch) -> None:
    make_set(tmp_path / "data", test=0)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_torch_home"))
    cases = [
        (("--data_dir", str(tmp_path / "empty")), "tri_trainlist.txt"),
        (("--crop", "64"), "larger than"),
        (("--loss", "1*Charb+0.005*VGG"), "--vgg_weights"),
        (("--val_dir", str(tmp_path / "data")), "empty"),
        (("--model", "cdfi_adacof", "--loss", LOSS), "g_Occlusion"),
        (("--head_lr", "Gamma=2"), "Gamma"),
        (("--model", "compressed_adacof", "--blend_bias", "-4"), "--blend_bias"),
        (("--grow_from", "a.pth", "--init_from", "b.pth"), "pass one"),
        (("--flow_distill", "0.1", "--flow_warmstart", "5"), "pass one"),
        (("--flow_distill", "-1"), "--flow_distill"),
        (("--warmup_steps", "-1"), "--warmup_steps"),
        (("--blur_warp", "-1"), "--blur_warp"),
        (("--blur_warp", "1", "--blur_sigmas", "2,x"), "--blur_sigmas"),
        (("--scale_augment", "1.5"), "--scale_augment"),
        (("--scale_augment", "0.5", "--scale_range", "2,1"), "--scale_range"),
        (("--scale_augment", "0.5", "--scale_range", "0,1"), "--scale_range"),
        (("--max_steps", "0"), "--max_steps"),
        (("--max_minutes", "-5"), "--max_minutes"),
        (("--crop", "8"), "--crop 8 is too small"),
    ]
    for i, (extra, needle) in enumerate(cases):
        assert run_cli(tmp_path, "--batch_size", "2", *extra, uid=f"bad{i}") == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0, err
        assert not (tmp_path / "mw" / f"bad{i}").exists()
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV missing: the flow warm start names the package
    for flag in ("--flow_warmstart", "--flow_distill"):
        assert run_cli(tmp_path, "--batch_size", "2", flag, "5", uid="nocv") == 2
        err = capsys.readouterr().err.strip()
        assert "opencv-python-headless" in err and err.count("\n") == 0, err
    (tmp_path / "mw" / "taken").mkdir(parents=True)
    (tmp_path / "mw" / "taken" / "log.txt").write_text("x")
    assert run_cli(tmp_path, uid="taken") == 2
    assert "--force" in capsys.readouterr().err


def test_floor_sampling_from_a_published_checkpoint_warns(tmp_path) -> None:
    make_set(tmp_path / "data")
    published = tmp_path / "published.pth"
    torch.save({"epoch": 1, "state_dict": make_model("compressed_adacof").state_dict()}, published)
    with pytest.warns(UserWarning, match="differ from the paper"):
        code = run_cli(
            tmp_path, "--init_from", str(published), "--sampling", "floor", "--batch_size", "2", "--max_steps", "1"
        )
    assert code == 0


def test_grow_from_starts_cdfi_from_a_trained_compressed_model(tmp_path, capsys) -> None:
    """--grow_from copies a compressed AdaCoF F5/D1 into a fresh CDFI F11/D2 (cdfi.training.grow): before the
    first step CDFI's AdaCoF output is the source's, and the Context term trains the GridNet."""
    make_set(tmp_path / "data")
    source = make_model("compressed_adacof", sampling="floor")
    init_he(source, seed=2)
    save_checkpoint(tmp_path / "source.pth", source, epoch=1)
    code = run_cli(
        tmp_path,
        *("--model", "cdfi_adacof", "--sampling", "floor", "--grow_from", str(tmp_path / "source.pth")),
        *("--loss", "1*Charb+0.01*g_Spatial+1*Context", "--batch_size", "2", "--max_steps", "1", "--lr", "0"),
    )
    assert code == 0
    assert "grown from" in capsys.readouterr().err
    run = tmp_path / "mw" / "run"
    assert float(_csv(run / "loss.csv")[0]["Context"]) > 0
    grown = load_model(run / "checkpoints" / "last.pth").eval()
    f0, f2 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        k = grown.get_kernel(f0, f2)
        _, w0, w2 = grown.synthesize_parts(f0, f2, k)
        expected = source.eval()(f0, f2)
    adacof = k["Occlusion"] * w0 + (1 - k["Occlusion"]) * w2
    assert float((adacof - expected).abs().mean()) < 0.1 * float((expected - (f0 + f2) / 2).abs().mean())
    assert float(k["Blend"].max()) < 0.01


def test_small_budget_flags_run_and_write_validation_curves(tmp_path) -> None:
    make_set(tmp_path / "data", test=2)
    extra = (
        "--sampling",
        "floor",
        "--offset_init",
        "0.3",
        "--motion_crop",
        "1",
        "--crop",
        "32",
        "--flow_warmstart",
        "2",
        "--weight_temperature",
        "2",
        "--head_lr",
        "Alpha=2,Beta=2",
        "--blur_warp",
        "0.5",
        "--synthetic",
        "0.5",
        "--init",
        "he",
        "--loss",
        LOSS + "+0.5*Warp",
        "--batch_size",
        "2",
        "--max_steps",
        "2",
        "--val_dir",
        str(tmp_path / "data"),
        "--val_every",
        "2",
    )
    assert run_cli(tmp_path, *extra) == 0
    run = tmp_path / "mw" / "run"
    rows = _csv(run / "val.csv")
    assert [int(r["step"]) for r in rows] == [0, 2]
    assert all(float(r["overlay"]) > 0 and float(r["dis_flow"]) > 0 for r in rows)
    assert load_checkpoint(run / "checkpoints" / "last.pth").meta["sampling"] == "floor"
    assert all(r["extra"] for r in _csv(run / "loss.csv"))  # the warm-start term was active
    assert all(float(r["Warp"]) > 0 for r in _csv(run / "loss.csv"))


@pytest.mark.parametrize(
    "make_loss",
    [lambda model: FlowWarmStart(model, steps=100), lambda model: MotionDistillation(model, weight=1.0)],
    ids=["warm_start_taps", "distill_motion"],
)
def test_flow_losses_move_the_kernels_towards_the_known_shift(tmp_path, make_loss) -> None:
    """Frames move 2 px left per frame: frame0's taps (or its kernels' mean sample position) should shift
    by +2 px horizontally, frame2's by -2."""
    data = VimeoTriplets(make_set(tmp_path / "data", count=2, w=64, h=64, shift=2), augment=False, with_flow=True)
    trainer = _trainer(tmp_path, data, "0*L1", lr=1e-3)
    loss = make_loss(trainer.model)
    trainer.extra_loss = loss
    truth = torch.zeros(2, 2, 64, 64)
    truth[:, 0] = -4.0  # flow from frame0 to frame2: 4 px to the left
    errors = []
    trainer.on_step = lambda tr, parts: errors.append(float(loss.offset_error(truth).detach()))
    trainer.fit(epochs=15)
    assert errors[-1] < 0.5 * errors[0]


class _GlobalShiftHeads(nn.Module):
    """F=1 kernels moving every pixel of frame0 by ``offset`` (x, y) and frame2's by minus it."""

    def __init__(self, offset: nn.Parameter) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> dict[str, torch.Tensor]:
        one = torch.ones_like(frame0[:, :1])
        dx, dy = self.offset[0], self.offset[1]
        return {
            "Weight1": one,
            "Alpha1": one * dy,
            "Beta1": one * dx,
            "Weight2": one,
            "Alpha2": -one * dy,
            "Beta2": -one * dx,
        }


class _OneTapModel(nn.Module):
    """The least a ``BlurredWarp`` needs of a model: ``get_kernel``, ``pad_frame`` and ``warp``."""

    kernel_size, dilation = 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(2))
        self.get_kernel = _GlobalShiftHeads(self.offset)

    def pad_frame(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def warp(self, x: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return adacof_warp(x, weight, alpha, beta, 1, sampling="floor")


@pytest.mark.parametrize("blurred", [False, True], ids=["warp_only", "with_blurred_warp"])
def test_blurred_warp_finds_a_shift_the_plain_warp_loss_cannot(blurred: bool) -> None:
    """A 14-px pan of a smooth random texture, one global offset learnt from zero: the Warp term alone
    stops within a pixel or two of the start (its gradient only sees a pixel around each sample); with
    the blurred-warp term at sigmas 2, 4, 8 it reaches the true shift."""
    gen = torch.Generator().manual_seed(0)
    base = gaussian_blur(torch.rand(1, 3, 96, 220, generator=gen), 3.0)
    shift, left, width = 14, 40, 128
    frame0, frame1, frame2 = (base[..., left + d : left + d + width] for d in (-shift, 0, shift))
    model = _OneTapModel()
    extra = BlurredWarp(model, weight=1.0, sigmas=(2.0, 4.0, 8.0))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(250):
        k = model.get_kernel(frame0, frame2)
        loss = sum(
            charbonnier(model.warp(f, k[f"Weight{s}"], k[f"Alpha{s}"], k[f"Beta{s}"]), frame1)
            for f, s in ((frame0, "1"), (frame2, "2"))
        )
        if blurred:
            loss = loss + extra(None, (frame0, frame1, frame2), None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dx, dy = model.offset.detach().tolist()
    if blurred:
        assert dx == pytest.approx(shift, abs=0.1) and abs(dy) < 0.1
    else:
        assert abs(dx) < 2


def test_blurred_warp_is_the_warp_term_on_blurred_frames(tmp_path) -> None:
    """On a real model: the term equals Charbonnier(warp(blur(frame)), blur(gt)) computed by hand from the
    kernels of the forward pass, averaged over sigmas and sides."""
    model = make_model("compressed_adacof", 5, 1, sampling="floor").train()
    extra = BlurredWarp(model, weight=0.5, sigmas=(1.5, 3.0))
    gen = torch.Generator().manual_seed(1)
    f0, f1, f2 = (torch.rand(1, 3, 40, 48, generator=gen) for _ in range(3))
    model(f0, f2)
    k = extra.heads
    expected = []
    for sigma in (1.5, 3.0):
        for f, s in ((f0, "1"), (f2, "2")):
            padded = model.pad_frame(torch.nn.functional.pad(gaussian_blur(f, sigma), (0, 16, 0, 24), mode="reflect"))
            warped = adacof_warp(padded, k[f"Weight{s}"], k[f"Alpha{s}"], k[f"Beta{s}"], 1, sampling="floor")
            expected.append(charbonnier(warped[..., :40, :48], gaussian_blur(f1, sigma)))
    got = extra(None, (f0, f1, f2), None).detach()
    assert float(got) == pytest.approx(0.5 * float(sum(expected).detach()) / 4, rel=1e-6)


def test_gaussian_blur_matches_scipy() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 2, 30, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = gaussian_blur(x, 2.0)
    ref = scipy_ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), mode="nearest", truncate=3.0)
    assert np.abs(ours.numpy() - ref).max() < 1e-12
    assert gaussian_blur(x, 0) is x


def test_motion_distillation_is_the_end_point_error_of_the_kernel_motion(tmp_path) -> None:
    """One-hot kernels on a known tap with known offsets move by tap + offset; the loss is its distance to -+f/2."""
    data = VimeoTriplets(make_set(tmp_path / "data", count=2, w=64, h=64), augment=False)
    trainer = _trainer(tmp_path, data, "1*L1", lr=1e-3)
    distill = MotionDistillation(trainer.model, weight=1.0, eps=0.0)
    f, d = distill.kernel_size, distill.dilation
    h = w = 8
    heads = {}
    for s, tap, off in (("1", (0, f * f - 1), (0.25, -0.5)), ("2", (f * f - 1, 0), (1.0, 0.0))):
        weight = torch.zeros(1, f * f, h, w)
        weight[:, tap[0]] = 1.0
        heads["Weight" + s] = weight
        heads["Alpha" + s] = torch.full((1, f * f, h, w), off[0])
        heads["Beta" + s] = torch.full((1, f * f, h, w), off[1])
    distill.heads = heads
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # (dx, dy)
    corner = (f - 1) / 2 * d
    # set 1 picks the top-left tap: motion (x, y) = (-corner - 0.5, -corner + 0.25), target (-1, +0.5)
    e1 = math.hypot(-corner - 0.5 + 1.0, -corner + 0.25 - 0.5)
    # set 2 picks the bottom-right tap: motion (corner + 0, corner + 1), target (+1, -0.5)
    e2 = math.hypot(corner - 1.0, corner + 1.0 + 0.5)
    assert float(distill.offset_error(flow)) == pytest.approx((e1 + e2) / 2, rel=1e-5)


def test_weight_temperature_equals_scaled_softmax(tmp_path) -> None:
    """Training with --weight_temperature T follows the trajectory of softmax(logits / T)."""
    data = VimeoTriplets(make_set(tmp_path / "data", count=2), augment=False)
    batch = next(iter(DataLoader(data, batch_size=2)))
    torch.manual_seed(0)
    a = make_model("compressed_adacof")
    b = make_model("compressed_adacof")
    b.load_state_dict(a.state_dict())
    init_weight_temperature(a, 4.0)
    opt_a = build_optimizer("ADAMax", parameter_groups(a, 1e-3, weight_temperature=4.0), 1e-3)
    for head in ("Weight1", "Weight2"):
        getattr(b.get_kernel, f"module{head}")[8] = _Tempered(4.0)
    opt_b = build_optimizer("ADAMax", b.parameters(), 1e-3)
    loss = CompositeLoss("1*L1")
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(3):
            opt.zero_grad()
            loss(model(batch[0], batch[2]), batch[1])[0].backward()
            opt.step()
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(batch[0], batch[2]), b(batch[0], batch[2]), atol=1e-4, rtol=0)


class _Tempered(torch.nn.Module):
    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x / self.t, dim=1)


def _head_spatial_std(model: torch.nn.Module, head: str) -> float:
    torch.manual_seed(0)
    f0 = torch.rand(1, 3, 64, 64)
    f2 = torch.roll(f0, 2, dims=-1)
    with torch.no_grad():
        out = model.get_kernel(f0, f2)[head]
    return float(out.std(dim=(2, 3)).mean())


def test_he_init_keeps_the_signal_through_the_unet() -> None:
    """Weights ~ N(0, 2/fan_in) with zero biases, and the offset heads then respond to the input: their
    spatial variation is far above the published (PyTorch default) init's, which is nearly constant."""
    published = make_model("compressed_adacof")
    model = make_model("compressed_adacof")
    init_he(model, seed=3)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.weight.numel() > 20000:
            fan_in = module.weight[0].numel()
            assert float(module.weight.detach().std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.05), name
            assert not module.bias.any(), name
    assert _head_spatial_std(model, "Alpha1") > 20 * _head_spatial_std(published, "Alpha1")
    # CDFI's GridNet keeps the published init; only the kernel estimation changes.
    cdfi = make_model("cdfi_adacof")
    before = {k: v.clone() for k, v in cdfi.state_dict().items()}
    init_he(cdfi)
    for key, value in cdfi.state_dict().items():
        assert torch.equal(value, before[key]) == key.startswith("context_synthesis."), key


def test_blend_bias_starts_cdfi_from_the_adacof_output() -> None:
    """A Blend bias of -4 leaves ~2% of the GridNet synthesis in the output: the distance from the
    occlusion blend of the warped frames shrinks ~25x against the same weights with a zero bias."""
    torch.manual_seed(0)
    f0, f2 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    gaps, blends = [], []
    for bias in (0.0, -4.0):
        model = make_model("cdfi_adacof").eval()
        init_he(model, seed=0)
        init_blend(model, bias)
        with torch.no_grad():
            k = model.get_kernel(f0, f2)
            frame, warp0, warp2 = model.synthesize_parts(f0, f2, k)
        adacof = k["Occlusion"] * warp0 + (1 - k["Occlusion"]) * warp2
        gaps.append(float((frame - adacof).abs().mean()))
        blends.append(k["Blend"])
    assert float(blends[1].max()) < 0.05 and float(blends[0].mean()) == pytest.approx(0.5, abs=0.2)
    assert gaps[1] < gaps[0] / 10
    with pytest.raises(TrainingError, match="CDFI only"):
        init_blend(make_model("compressed_adacof"), -4.0)


def test_offset_init_and_per_head_lr() -> None:
    model = make_model("compressed_adacof")
    init_offsets(model, 0.25, seed=1)
    for head in ("Alpha1", "Beta1", "Alpha2", "Beta2"):
        bias = getattr(model.get_kernel, f"module{head}")[7].bias
        assert torch.equal(bias.abs(), torch.full_like(bias, 0.25)) and (bias > 0).any() and (bias < 0).any()
    groups = parameter_groups(model, 1e-3, {"Alpha": 3.0, "Weight1": 0.5})
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 3e-3 if ".moduleAlpha" in name else 5e-4 if ".moduleWeight1." in name else 1e-3
        assert by_id[id(p)] == pytest.approx(expected), name


def test_small_recipe_sets_its_defaults_and_explicit_flags_win(tmp_path) -> None:
    make_set(tmp_path / "data", test=2)
    argv = ("--recipe", "small", "--crop", "32", "--batch_size", "2", "--max_steps", "1")
    assert run_cli(tmp_path, *argv, "--model", "compressed_adacof") == 0
    saved = json.loads((tmp_path / "mw" / "run" / "args.json").read_text())
    expected = {"sampling": "floor", "init": "he", "motion_crop": 0.5, "decay_type": "none", "crop": 32}
    assert {k: saved[k] for k in expected} == expected
    assert saved["loss"] == LOSS  # run_cli passes --loss explicitly: it wins
    assert load_checkpoint(tmp_path / "mw" / "run" / "checkpoints" / "last.pth").meta["sampling"] == "floor"
    published = train.build_parser().parse_args(["--model", "cdfi_adacof"])
    apply_recipe(published)
    assert (published.sampling, published.init, published.crop, published.loss) == (
        "trunc",
        "published",
        None,
        "1*Charb+0.01*g_Spatial+0.005*VGG",
    )
    small = train.build_parser().parse_args(["--recipe", "small", "--sampling", "trunc", "--model", "cdfi_adacof"])
    apply_recipe(small)
    assert (small.sampling, small.init, small.crop, small.loss) == ("trunc", "he", 128, "1*Charb+0.01*g_Spatial+1*Warp")
    compressed = train.build_parser().parse_args(["--recipe", "small", "--model", "compressed_adacof"])
    apply_recipe(compressed)
    assert compressed.loss == LOSS + "+1*Warp"


def test_warmup_scales_the_first_steps_and_restores_the_lr(tmp_path) -> None:
    """Adamax's first step moves every weight with a gradient by about lr: warm-up over 4 steps makes it lr / 4."""
    data = VimeoTriplets(make_set(tmp_path / "data", count=2), augment=False)
    batch = next(iter(DataLoader(data, batch_size=2)))
    moves = {}
    for warmup in (0, 4):
        trainer = _trainer(tmp_path, data, lr=1e-3, warmup_steps=warmup)
        seen: list[float] = []
        trainer.on_step = lambda tr, parts, seen=seen: seen.append(tr.optimizer.param_groups[0]["lr"])
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.train_step(batch)
        moves[warmup] = max(
            float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.parameters(), before, strict=True)
        )
        for _ in range(4):
            trainer.train_step(batch)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # restored after every step
        expected = [1e-3 * min(1.0, k / warmup) for k in range(1, 6)] if warmup else [1e-3] * 5
        assert seen == pytest.approx(expected)
    assert moves[0] == pytest.approx(1e-3, rel=0.01) and moves[4] == pytest.approx(0.25e-3, rel=0.01)
