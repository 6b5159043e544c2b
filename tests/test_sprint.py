"""The GPU training sprint on tiny data: the split against make_triplets, the bundle's pack/unpack round
trip and refusals, the device data path against an independent CPU implementation of the same draws,
validation PSNR against the published protocol, the loss against CompositeLoss, fp16 checkpoints
against fp32 ones, and the whole sprint end to end on the CPU (a finished run, bad input, SIGTERM)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cdfi.evaluation.baselines import Overlay
from cdfi.evaluation.metrics import psnr
from cdfi.io.checkpoint import load_checkpoint, load_model, save_checkpoint
from cdfi.io.images import quantize, read_image
from cdfi.runtime import Runtime
from cdfi.training.losses import CompositeLoss
from cdfi.training.sprint import run as sprint_run
from cdfi.training.sprint.bundle import (
    BundleError,
    SourceClip,
    decode_video,
    held_out_start,
    pack_bundle,
    read_bundle,
    triplet_starts,
    unpack_bundle,
)
from cdfi.training.sprint.device_data import DeviceSampler, FrameBank, ValidationSet, validation_psnr
from cdfi.training.sprint.loop import Schedule, SprintLoss, StopFlag, save_sprint_checkpoint, train_slot
from datasets.make_triplets import build_triplets
from models import make_model, published_arch

REPO = Path(__file__).resolve().parent.parent
SHIPPED_COMPRESSED = REPO / "checkpoints" / "compressed_adacof_F_5_D_1_ours.pth"
SHIPPED_CDFI = REPO / "checkpoints" / "cdfi_adacof_ours.pth"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sprint_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def panning_clip(n: int, height: int, width: int, seed: int, shift: int = 2, cut_at: int | None = None) -> np.ndarray:
    """``n`` frames of a smooth random texture panning by ``shift`` px per frame; from ``cut_at`` on,
    another texture (a scene cut)."""
    rng = np.random.default_rng(seed)

    def texture(extra: int) -> np.ndarray:
        coarse = rng.integers(0, 256, (height // 4 + 2, (width + extra) // 4 + 2, 3), dtype=np.uint8)
        big = Image.fromarray(coarse).resize((coarse.shape[1] * 4, coarse.shape[0] * 4), Image.Resampling.BILINEAR)
        return np.asarray(big)

    a, b = texture(n * shift), texture(n * shift)
    frames = [
        (b if cut_at is not None and i >= cut_at else a)[:height, i * shift : i * shift + width] for i in range(n)
    ]
    return np.ascontiguousarray(np.stack(frames))


def tiny_arch(name: str, k: int, d: int) -> dict:
    """The published spec of a family with every width cut to 4 (2 for CDFI's feature projections)."""
    spec = published_arch(name, k, d)
    spec["encoder"] = [[4, 4, 4] for _ in spec["encoder"]]
    spec["decoder"] = [[4, 4, 4] for _ in spec["decoder"]]
    spec["heads"] = {h: [4, 4, 4] for h in spec["heads"]}
    if name == "cdfi_adacof":
        spec["features"], spec["gridnet"] = [2] * 5, [4, 4, 4]
    return spec


def tiny_model(name: str, seed: int = 0):
    k, d = (11, 2) if name == "cdfi_adacof" else (5, 1)
    torch.manual_seed(seed)
    return make_model(name, k, d, arch=tiny_arch(name, k, d), sampling="floor")


CLIPS = {"walk": (26, 64, 96, 0), "pan": (22, 64, 80, 1), "small": (14, 32, 48, 2)}
VALIDATION = ["walk", "small"]


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """Three tiny clips as PNG frame folders (``make footage``'s layout)."""
    root = tmp_path_factory.mktemp("footage")
    for name, (n, h, w, seed) in CLIPS.items():
        folder = root / name
        folder.mkdir()
        for i, frame in enumerate(panning_clip(n, h, w, seed)):
            Image.fromarray(frame).save(folder / f"{i:06d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ckpt")
    paths = []
    for name in ("cdfi_adacof", "compressed_adacof"):
        paths.append(save_checkpoint(root / f"{name}.pth", tiny_model(name), 0))
    return paths


@pytest.fixture(scope="module")
def bundle_dir(footage, tiny_checkpoints, tmp_path_factory) -> Path:
    """The tiny footage packed by the packing script, with baselines and start scores."""
    out = tmp_path_factory.mktemp("packed") / "bundle"
    pack = _script("pack_sprint_data")
    argv = ["--footage", str(footage), "--out", str(out), "--validation", *VALIDATION, "--preset", "ultrafast"]
    assert pack.main([*argv, "--checkpoints", *map(str, tiny_checkpoints), "--threads", "1"]) == 0
    return out


def _frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())])


# ---------------------------------------------------------------------------------------------------------
# the split and the bundle


def test_split_matches_make_triplets(tmp_path):
    """Held-out part and scene-cut rule give the triplets make_triplets writes (its triplets.json)."""
    clips = [panning_clip(30, 48, 64, 0, cut_at=12), panning_clip(9, 48, 64, 1), panning_clip(40, 48, 64, 2)]
    folders = []
    for c, frames in enumerate(clips):
        folder = tmp_path / f"clip{c}"
        folder.mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:04d}.png")
        folders.append(folder)
    build_triplets(folders, tmp_path / "trip", progress=False)
    entries = json.loads((tmp_path / "trip" / "triplets.json").read_text())["entries"]
    for c, frames in enumerate(clips):
        want = {
            split: sorted(
                e["frames"][0] for k, e in entries.items() if k.startswith(f"{c + 1:05d}/") and e["split"] == split
            )
            for split in ("train", "test")
        }
        cut = held_out_start(len(frames), 0.1)
        assert sorted(triplet_starts(frames, 0, cut, 0.15)) == want["train"]
        assert sorted(triplet_starts(frames, cut, len(frames), 0.15)) == want["test"]
    assert 10 not in triplet_starts(clips[0], 0, 30, 0.15)  # the cut between frames 11 and 12 is dropped


def test_pack_unpack_round_trip(bundle_dir, footage):
    bundle = read_bundle(bundle_dir)
    unpacked = unpack_bundle(bundle, threads=2)
    assert not unpacked.notes
    names = [c["name"] for c in bundle.clips]
    assert names == sorted(CLIPS)  # the packing script's order
    for entry, frames in zip(bundle.clips, unpacked.train, strict=True):
        source = _frames(footage / entry["name"])[: entry["frames"]]
        mse = np.mean((frames.astype(np.float64) - source) ** 2)
        fidelity = 10 * math.log10(255**2 / mse)
        assert fidelity == pytest.approx(entry["psnr_to_source"], abs=1e-3)
        assert fidelity > 35
        cut = held_out_start(len(_frames(footage / entry["name"])), 0.1)
        assert entry["frames"] == cut
        assert entry["triplets"] == triplet_starts(source, 0, cut, 0.15)
    # validation frames: the held-out end of each validation clip, bit for bit
    for name, frames in zip(VALIDATION, unpacked.validation.clips, strict=True):
        source = _frames(footage / name)
        assert np.array_equal(frames, source[held_out_start(len(source), 0.1) :])
    assert len(unpacked.validation.items) == len(bundle.manifest["validation"]["names"]) == 2
    # the GPU machine decodes with OpenCV, the packer could have used PyAV: both give the same frames
    entry = bundle.clips[0]
    args = (bundle_dir / entry["file"], entry["frames"], entry["height"], entry["width"])
    assert np.array_equal(decode_video(*args, decoder="opencv"), decode_video(*args, decoder="pyav"))
    with av.open(str(args[0])) as container:  # the colour conversion is named in the stream
        cc = container.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_range, cc.pix_fmt) == (6, 1, "yuv444p")


def test_bundle_baselines_are_the_protocols(bundle_dir, footage, tiny_checkpoints):
    """The frame-average and start scores in the manifest are the published protocol's (skimage PSNR of
    the 8-bit output), recomputed here from the source frames."""
    manifest = read_bundle(bundle_dir).manifest
    overlay, start = [], []
    model = load_model(tiny_checkpoints[1]).eval()
    for name in VALIDATION:
        source = _frames(footage / name)
        cut = held_out_start(len(source), 0.1)
        for s in triplet_starts(source, cut, len(source), 0.15):
            f0, gt, f2 = (torch.from_numpy(source[s + i]).permute(2, 0, 1).float() / 255 for i in range(3))
            overlay.append(psnr(gt, quantize((f0 + f2) / 2)))
            with torch.no_grad():
                start.append(psnr(gt, quantize(model(f0[None], f2[None])[0])))
    assert manifest["baselines"]["overlay"]["items"] == pytest.approx(overlay, abs=1e-9)
    assert manifest["start"]["compressed_adacof"]["items"] == pytest.approx(start, abs=1e-9)
    assert "dis_flow" in manifest["baselines"]


def test_bundle_refusals(tmp_path):
    clips = [SourceClip("a", panning_clip(20, 32, 48, 0)), SourceClip("b", panning_clip(20, 32, 48, 1))]
    with pytest.raises(BundleError, match="passes --max_mib"):
        pack_bundle(iter(clips), tmp_path / "b", validation=["a"], max_mib=1e-4, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(BundleError, match="validation clip 'c'"):
        pack_bundle(iter(clips), tmp_path / "b", validation=["c"], log=lambda _: None)
    pack_bundle(iter(clips), tmp_path / "b", validation=["a"], log=lambda _: None)
    with pytest.raises(FileExistsError):
        pack_bundle(iter(clips), tmp_path / "b", validation=["a"], log=lambda _: None)
    video = tmp_path / "b" / read_bundle(tmp_path / "b").clips[0]["file"]
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="damaged"):
        read_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not a sprint bundle"):
        read_bundle(tmp_path)


def test_pack_script_one_line_errors(tmp_path, capsys):
    pack = _script("pack_sprint_data")
    assert pack.main(["--footage", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such footage folder" in err and "\n" not in err
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------------------
# the device data path against an independent implementation


def reference_crops(clips: list[np.ndarray], triplets: list[tuple[int, int, int]], draws, crop: int, stride: int):
    """The batch of ``draws`` cut with numpy slicing from per-clip arrays, one item at a time, with the
    motion crop's candidate chosen by a plain loop."""
    frames = [f for clip in clips for f in clip]
    d = {k: v.cpu().numpy() for k, v in vars(draws).items()}
    out = []
    for b, index in enumerate(d["index"]):
        tri = [frames[t] for t in triplets[index]]
        top, left = d["cand_top"][b, 0], d["cand_left"][b, 0]
        if d["motion"][b] and d["cand_top"].shape[1] > 1:
            energies = []
            for y, x in zip(d["cand_top"][b], d["cand_left"][b], strict=True):
                a = tri[0][y : y + crop : stride, x : x + crop : stride].astype(np.int64)
                c = tri[2][y : y + crop : stride, x : x + crop : stride].astype(np.int64)
                energies.append(np.abs(a - c).sum())
            best = int(np.argmax(energies))
            top, left = d["cand_top"][b, best], d["cand_left"][b, best]
        assert (top, left) == (d["top"][b], d["left"][b])
        item = [f[top : top + crop, left : left + crop] for f in tri]
        if d["hflip"][b]:
            item = [f[:, ::-1] for f in item]
        if d["vflip"][b]:
            item = [f[::-1] for f in item]
        if d["swap"][b]:
            item = item[::-1]
        out.append(np.stack(item))
    return np.stack(out, axis=1)  # (3, B, crop, crop, 3)


def test_device_crops_match_reference():
    clips = [panning_clip(7, 40, 56, 0, shift=3), panning_clip(6, 48, 36, 1)]
    bank = FrameBank.from_clips(clips)
    triplets = [(s, s + 1, s + 2) for s in range(5)] + [(7 + s, 8 + s, 9 + s) for s in range(4)]
    sampler = DeviceSampler(bank, torch.tensor(triplets), batch=12, crop=24, motion_crop=0.5, candidates=5, seed=3)
    seen = {"motion": 0, "hflip": 0, "swap": 0}
    for _ in range(6):
        draws = sampler.draw()
        got = sampler.cut(draws).numpy()
        np.testing.assert_array_equal(got, reference_crops(clips, triplets, draws, 24, 4))
        f0, f1, f2 = sampler.batch_from(draws)
        for k, frame in enumerate((f0, f1, f2)):
            assert frame.shape == (12, 3, 24, 24) and frame.dtype == torch.float32
            assert frame.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(frame, torch.from_numpy(got[k]).permute(0, 3, 1, 2).float() / 255)
        for key in seen:
            seen[key] += int(getattr(draws, key).sum())
    assert all(0 < v < 72 for v in seen.values())  # every augmentation drawn, none always


def test_sampler_refuses_crops_larger_than_frames():
    bank = FrameBank.from_clips([panning_clip(4, 32, 48, 0)])
    with pytest.raises(ValueError, match="smaller than the 64x64 crop"):
        DeviceSampler(bank, torch.tensor([(0, 1, 2)]), batch=2, crop=64)


def test_validation_psnr_is_the_published_protocol():
    clip = panning_clip(5, 64, 96, 4)
    val = ValidationSet.from_arrays([clip], [(0, 0, 1, 2), (0, 1, 2, 3), (0, 2, 3, 4)], ["a", "b", "c"])
    model = tiny_model("compressed_adacof")
    frames = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in clip]
    for net in (Overlay(), model):
        got = validation_psnr(net, val, batch=2).tolist()
        with torch.no_grad():
            want = [
                psnr(frames[j], quantize(net.eval()(frames[i][None], frames[k][None])[0]))
                for i, j, k in ((0, 1, 2), (1, 2, 3), (2, 3, 4))
            ]
        assert got == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# loss, schedule, checkpoints


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("cdfi_adacof", "1*Charb+0.01*g_Spatial+1*Warp+1*Context"),
        ("compressed_adacof", "1*Charb+0.01*g_Spatial+0.005*g_Occlusion+1*Warp+0.5*L1+2*MSE"),
    ],
)
def test_sprint_loss_equals_composite_loss(name, spec):
    model = tiny_model(name).train()
    f0, f1, f2 = (torch.rand(2, 3, 32, 32) for _ in range(3))
    outputs = model(f0, f2)
    total, parts = SprintLoss(spec)(outputs, f1)
    want_total, want_parts = CompositeLoss(spec)(outputs, f1)
    torch.testing.assert_close(total, want_total)
    assert parts.tolist() == pytest.approx(list(want_parts.values()), rel=1e-6)


def test_sprint_loss_refuses_vgg_and_missing_outputs():
    with pytest.raises(ValueError, match="no VGG term"):
        SprintLoss("1*Charb+0.005*VGG")
    model = tiny_model("compressed_adacof").train()
    outputs = model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="Context needs 'context'"):
        SprintLoss("1*Charb+1*Context").check(outputs, "compressed_adacof")


def test_schedule_warms_up_and_anneals():
    s = Schedule(1e-3, warmup_steps=10, final=0.1)
    assert s.at(0, 0.0) == pytest.approx(1e-4)
    assert s.at(9, 0.0) == pytest.approx(1e-3)
    assert s.at(100, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert s.at(100, 1.0) == pytest.approx(1e-4)


def test_fp16_checkpoint_loads_into_fp32_model(tmp_path):
    model = tiny_model("cdfi_adacof")
    path = tmp_path / "half.pth"
    save_sprint_checkpoint(path, model, step=7, extra={"val_psnr": 30.0})
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 0 and ckpt.meta["step"] == 7 and ckpt.meta["weights_dtype"] == "float16"
    assert {v.dtype for v in ckpt.state_dict.values() if v.is_floating_point()} == {torch.float16}
    loaded = load_model(path)
    assert loaded.sampling == "floor" and loaded.arch == model.arch
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype
        torch.testing.assert_close(got, value.half().to(value.dtype), rtol=0, atol=0)


@pytest.mark.skipif(not SHIPPED_COMPRESSED.is_file(), reason="shipped checkpoint missing")
def test_fp16_storage_of_shipped_files_costs_nothing_measurable(tmp_path, data_root, one_thread):
    """The shipped files stored in fp16: CDFI fits the 16 MiB limit, and on two Middlebury frames the
    PSNR against the ground truth moves by less than 0.01 dB."""
    items = sorted((data_root / "middlebury_others" / "input").iterdir())[:2]
    for shipped, crop in ((SHIPPED_COMPRESSED, None), (SHIPPED_CDFI, 192)):
        fp32 = load_model(shipped)
        path = tmp_path / shipped.name
        save_sprint_checkpoint(path, fp32, step=0)
        assert path.stat().st_size < 16 * 2**20
        assert path.stat().st_size < 0.55 * shipped.stat().st_size
        fp16 = load_model(path)
        for item in items:
            f0, f2 = read_image(item / "frame10.png"), read_image(item / "frame11.png")
            gt = read_image(data_root / "middlebury_others" / "gt" / item.name / "frame10i11.png")
            if crop:
                f0, f2, gt = (t[:, :crop, :crop] for t in (f0, f2, gt))
            with torch.no_grad():
                a, b = (quantize(m(f0[None], f2[None])[0]) for m in (fp32, fp16))
            assert abs(psnr(gt, a) - psnr(gt, b)) < 0.01
            assert psnr(a, b) > 45


# ---------------------------------------------------------------------------------------------------------
# the loop and the whole sprint


def test_non_finite_loss_keeps_the_last_good_weights():
    clip = panning_clip(6, 32, 40, 5)
    bank = FrameBank.from_clips([clip])
    sampler = DeviceSampler(bank, torch.tensor([(0, 1, 2), (1, 2, 3)]), batch=2, crop=32, seed=0)
    calls = {"n": 0}
    real_next = sampler.next

    def poisoned():
        calls["n"] += 1
        f0, f1, f2 = real_next()
        return (f0, f1 * math.nan, f2) if calls["n"] > 7 else (f0, f1, f2)

    sampler.next = poisoned
    model = tiny_model("compressed_adacof").train()
    snapshots = {}

    def on_log(row):
        snapshots[row["step"]] = [p.detach().clone() for p in model.parameters()]

    val = ValidationSet.from_arrays([clip], [(0, 0, 1, 2)], ["x"])
    res = train_slot(
        model,
        label="tiny",
        loss=SprintLoss("1*Charb+1*Warp"),
        sampler=sampler,
        val=val,
        runtime=Runtime(torch.device("cpu"), "fp32"),
        schedule=Schedule(1e-3, warmup_steps=1),
        slot_s=30.0,
        on_log=on_log,
        on_save=lambda step: None,
        stop=StopFlag(),
        log_every=5,
        mid_validation=False,
    )
    assert res.stopped.startswith("non-finite loss by step 10") and res.weights_step == 5
    for p, q in zip(model.parameters(), snapshots[5], strict=True):
        assert torch.equal(p, q)


def sprint_args(bundle_dir: Path, checkpoints: list[Path], out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(bundle_dir), "--out", str(out), "--device", "cpu", "--precision", "fp32", "--threads", "1",
        "--checkpoints", *map(str, checkpoints), "--batch", "2", "--crop", "32", "--log_every", "4",
        "--limit_min", "1", "--reserve_min", "0.3", "--warmup_steps", "5", *extra,
    ]  # fmt: skip


def test_sprint_end_to_end_on_cpu(bundle_dir, tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    code = _script("gpu_sprint").main(sprint_args(bundle_dir, tiny_checkpoints, out, "--budget_min", "0.1"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "GPU training sprint: cpu" in printed and "frame average" in printed
    names = {"cdfi_adacof_F_11_D_2_sprint.pth", "compressed_adacof_F_5_D_1_sprint.pth"}
    assert {p.name for p in out.iterdir()} == names | {"curves.csv", "curves.png", "summary.txt", "summary.json"}
    report = json.loads((out / "summary.json").read_text())
    manifest = read_bundle(bundle_dir).manifest
    assert report["baselines"]["overlay"] == pytest.approx(manifest["baselines"]["overlay"]["psnr"])
    assert report["train_triplets"] == sum(len(c["triplets"]) for c in manifest["clips"] if c["height"] >= 32)
    unpacked = unpack_bundle(read_bundle(bundle_dir))
    val = ValidationSet.from_arrays(unpacked.validation.clips, unpacked.validation.items, unpacked.validation.names)
    for m, start in zip(report["models"], ("cdfi_adacof", "compressed_adacof"), strict=True):
        assert m["steps"] > 0 and m["steps_per_s"] > 0 and m["stopped"] is None
        assert m["val"]["start"] == pytest.approx(manifest["start"][start]["psnr"])  # precomputed, not redone
        model = load_model(out / m["checkpoint"])
        assert model.sampling == "floor"
        # the written fp16 weights score what the run reported for its fp32 weights
        assert float(validation_psnr(model, val).mean()) == pytest.approx(m["val"]["end"], abs=0.05)
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0].startswith("model,step,seconds,samples,lr,loss") and rows[0].endswith("val_psnr")
    assert len(rows) > 6


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--budget_min", "1"], "does not fit the call's --limit_min 1"),
        (["--budget_min", "0.1", "--shares", "1"], "--shares needs one positive weight per checkpoint (2)"),
        (["--budget_min", "0.1", "--crop", "40"], "a positive multiple of 32"),
        (["--budget_min", "0.1", "--val_limit", "0"], "--val_limit must be at least 1"),
        (["--budget_min", "0.1", "--device", "cuda"], "no CUDA GPU is available"),
    ],
)
def test_sprint_refuses_bad_input_in_one_line(bundle_dir, tiny_checkpoints, tmp_path, capsys, extra, needle):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "run"
    assert _script("gpu_sprint").main(sprint_args(bundle_dir, tiny_checkpoints, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not out.exists()


def test_memory_refusal_is_one_line(monkeypatch):
    """Too little device memory for the batch: the dry step's out-of-memory becomes one SprintError line,
    and so does a frame bank that does not fit beside a step."""
    runtime = Runtime(torch.device("cuda", 0), "fp32")
    monkeypatch.setattr(sprint_run, "_memory", lambda rt: (3 * 2**30, 8 * 2**30))
    monkeypatch.setattr(sprint_run, "_device_name", lambda rt: "cuda:0 (test)")
    model = tiny_model("compressed_adacof")

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.forward = oom
    plan = sprint_run._Plan(Path("x.pth"), model, "compressed_adacof F5/D1", SprintLoss("1*Charb"), "x", 1.0)
    opts = sprint_run.SprintOptions(data=Path("."), out=Path("."), checkpoints=[Path("x")], shares=[1.0])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev: None)
    monkeypatch.setattr(sprint_run, "_random_frames", lambda shape, dev: [torch.zeros(shape) for _ in range(3)])
    with pytest.raises(sprint_run.SprintError, match=r"not enough memory for compressed_adacof F5/D1 at batch 16"):
        sprint_run._dry_step(plan, opts, runtime)
    plan.peak_bytes = 2 * 2**30
    with pytest.raises(sprint_run.SprintError, match=r"3.0 GiB free of 8.0.*need 6.0 GiB"):
        sprint_run.check_memory([plan], 2 * 2**30, opts, runtime)


def test_sigterm_leaves_checkpoint_and_curves(bundle_dir, tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    argv = sprint_args(bundle_dir, tiny_checkpoints, out, "--budget_min", "0.6", "--save_every_s", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "gpu_sprint.py"), *argv], env=env, cwd=REPO)
    try:
        target = out / "cdfi_adacof_F_11_D_2_sprint.pth"
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert target.exists(), "no periodic checkpoint within a minute"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads((out / "summary.json").read_text())
    assert report["stopped"] == "signal SIGTERM"
    assert report["models"][0]["steps"] > 0 and report["models"][0]["checkpoint"]
    assert load_model(target).model_name == "cdfi_adacof"
    assert (out / "curves.csv").read_text().count("\n") > 1
    assert not list(out.glob(".*"))  # no temporary files left


def test_measure_mode_on_cpu(tiny_checkpoints, capsys):
    rows = sprint_run.measure(
        tiny_checkpoints, Runtime(torch.device("cpu"), "fp32"), batch=2, crop=32, warmup=1, steps=2
    )
    assert [r["model"] for r in rows] == ["cdfi_adacof F11/D2", "compressed_adacof F5/D1"]
    assert all(r["steps_per_s"] > 0 and r["samples_per_s"] == pytest.approx(2 * r["steps_per_s"]) for r in rows)
    assert "steps/s" in capsys.readouterr().out
