"""train.py and the Trainer on tiny synthetic Vimeo-layout sets: every family trains, resume is exact,
DDP equals one process, NaN keeps the last good checkpoint, the published flags and switches do what
the published train.py does, and the small-budget options run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio
from torch.utils.data import DataLoader
from training_helpers import LOSS, cli_args, make_middlebury, make_set, read_csv

import train
from cdfi.io.checkpoint import load_checkpoint, load_model, save_checkpoint
from cdfi.io.images import read_image
from cdfi.runtime import Runtime
from cdfi.training.config import build_config
from cdfi.training.init import init_he
from cdfi.training.losses import CompositeLoss
from cdfi.training.optim import build_optimizer
from cdfi.training.sampler import ResumableSampler
from cdfi.training.trainer import NonFiniteLossError, Trainer, TrainerOptions
from datasets.vimeo import VimeoTriplets
from models import make_model

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(tmp_path: Path, *extra: str, data: Path | None = None, uid: str = "run") -> int:
    return train.main([*cli_args(tmp_path, data, uid), *extra])


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
    assert [int(r["step"]) for r in read_csv(run / "loss.csv")] == [1, 2]


def test_epoch_evaluation_scores_best_checkpoint(tmp_path) -> None:
    """Per-epoch Middlebury PSNR in eval.csv equals skimage's PSNR of best.pth's 8-bit prediction."""
    make_set(tmp_path / "data")
    inp, gt = make_middlebury(tmp_path / "mb")
    args = ("--epochs", "1", "--batch_size", "2", "--test_every", "1", "--test_input", str(inp), "--test_gt", str(gt))
    assert run_cli(tmp_path, *args) == 0
    row = read_csv(tmp_path / "mw" / "run" / "eval.csv")[0]
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
    loss_a = [float(r["loss"]) for r in read_csv(tmp_path / "mw" / "straight" / "loss.csv")]
    loss_b = [float(r["loss"]) for r in read_csv(tmp_path / "mw" / "split" / "loss.csv")]
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
    assert "FutureWarning" not in proc.stderr  # no deprecated DistributedDataParallel argument
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
    loss_fn = kwargs.pop("loss_fn", CompositeLoss(loss))
    options = TrainerOptions(checkpoint_path=tmp_path / "last.pth", progress=False, **kwargs)
    return Trainer(model, optimizer, loader, loss_fn, Runtime(torch.device("cpu")), options)


def test_loss_decreases_when_overfitting_two_triplets(tmp_path) -> None:
    data = VimeoTriplets(make_set(tmp_path / "data", count=2), augment=False)
    losses: list[float] = []
    trainer = _trainer(tmp_path, data, "1*L1", lr=2e-3)
    trainer.on_step = lambda tr, parts: losses.append(parts["loss"])
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

    torch.manual_seed(0)
    model = make_model("compressed_adacof")
    loader = DataLoader(data, batch_size=1, sampler=ResumableSampler(data, seed=0), drop_last=True)
    options = TrainerOptions(checkpoint_path=tmp_path / "last.pth", steps_per_checkpoint=1, progress=False)
    trainer = Trainer(model, build_optimizer("ADAMax", model.parameters(), 1e-3), loader, poisoned, None, options)
    snapshot = {}
    trainer.on_step = lambda tr, parts: snapshot.update({k: v.clone() for k, v in tr.model.state_dict().items()})
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.fit(epochs=1)
    saved = load_checkpoint(tmp_path / "last.pth")
    assert saved.meta["step"] == 2 and trainer.step == 2
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshot[key]) and torch.equal(saved.state_dict[key], value)


def test_nonfinite_loss_is_exit_3_from_the_command_line(tmp_path, capsys, monkeypatch) -> None:
    make_set(tmp_path / "data")
    monkeypatch.setattr(CompositeLoss, "forward", lambda self, output, target: (torch.tensor(float("nan")), {}))
    assert run_cli(tmp_path, "--batch_size", "2", "--max_steps", "1") == 3
    err = capsys.readouterr().err.strip()
    assert "loss is nan at step 1" in err and err.count("\n") == 0


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
        (("--grow_from", "a.pth", "--init_from", "b.pth"), "pass one"),
        (("--blur_warp", "-1"), "--blur_warp"),
        (("--blur_warp", "1", "--blur_sigmas", "2,x"), "--blur_sigmas"),
        (("--max_steps", "0"), "--max_steps"),
        (("--max_minutes", "-5"), "--max_minutes"),
        (("--crop", "8"), "--crop 8 is too small"),
        (("--synthetic", "1.5"), "--synthetic"),
        (("--offset_init", "0.25"), "--offset_init was removed"),
        (("--config", str(tmp_path / "nothing.json")), "nothing.json"),
        (("--decay_type", "step_x"), "--decay_type"),
        (("--loss", "1*Charb+1*Foo"), "Foo"),
    ]
    for i, (extra, needle) in enumerate(cases):
        assert run_cli(tmp_path, "--batch_size", "2", *extra, uid=f"bad{i}") == 2, extra
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0, err
        assert not (tmp_path / "mw" / f"bad{i}").exists()
    make_set(tmp_path / "val", count=0, test=2)
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV missing: the validation baselines name the package
    assert run_cli(tmp_path, "--batch_size", "2", "--val_dir", str(tmp_path / "val"), uid="nocv") == 2
    err = capsys.readouterr().err.strip()
    assert "opencv-python-headless" in err and err.count("\n") == 0, err
    assert not (tmp_path / "mw" / "nocv").exists()
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
    assert float(read_csv(run / "loss.csv")[0]["Context"]) > 0
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
        *("--sampling", "floor", "--motion_crop", "1", "--crop", "32", "--init", "he"),
        *("--blur_warp", "0.5", "--synthetic", "0.5", "--grad_clip", "10"),
        *("--loss", LOSS + "+0.5*Warp", "--batch_size", "2", "--max_steps", "2"),
        *("--val_dir", str(tmp_path / "data"), "--val_every", "2"),
    )
    assert run_cli(tmp_path, *extra) == 0
    run = tmp_path / "mw" / "run"
    rows = read_csv(run / "val.csv")
    assert [int(r["step"]) for r in rows] == [0, 2]
    assert all(float(r["overlay"]) > 0 and float(r["dis_flow"]) > 0 for r in rows)
    assert load_checkpoint(run / "checkpoints" / "last.pth").meta["sampling"] == "floor"
    assert all(r["extra"] for r in read_csv(run / "loss.csv"))  # the blurred-warp term was active
    assert all(float(r["Warp"]) > 0 for r in read_csv(run / "loss.csv"))


def _parsed(*argv: str):
    """The config train.py would build from ``argv``, through its own parser."""
    args = train.build_parser().parse_args(list(argv))
    return build_config(train.overrides(args), args.recipe, args.config)


def test_small_recipe_sets_its_defaults_and_explicit_flags_win(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("cdfi.training.losses.vgg_weights_available", lambda path=None: True)  # the published loss
    make_set(tmp_path / "data", test=2)
    argv = ("--recipe", "small", "--crop", "32", "--batch_size", "2", "--max_steps", "1")
    assert run_cli(tmp_path, *argv, "--model", "compressed_adacof") == 0
    saved = json.loads((tmp_path / "mw" / "run" / "args.json").read_text())
    got = {
        "sampling": saved["model"]["sampling"],
        "init": saved["model"]["init"],
        "motion_crop": saved["data"]["motion_crop"],
        "decay_type": saved["optimisation"]["decay_type"],
        "crop": saved["data"]["crop"],
    }
    expected = {"sampling": "floor", "init": "he", "motion_crop": 0.5, "decay_type": "none", "crop": 32}
    assert got == expected
    assert saved["optimisation"]["loss"] == LOSS  # run_cli passes --loss explicitly: it wins
    assert load_checkpoint(tmp_path / "mw" / "run" / "checkpoints" / "last.pth").meta["sampling"] == "floor"
    published = _parsed("--model", "cdfi_adacof")
    assert (published.model.sampling, published.model.init, published.data.crop, published.optimisation.loss) == (
        "trunc",
        "published",
        None,
        "1*Charb+0.01*g_Spatial+0.005*VGG",
    )
    small = _parsed("--recipe", "small", "--sampling", "trunc", "--model", "cdfi_adacof")
    assert (small.model.sampling, small.model.init, small.data.crop, small.optimisation.loss) == (
        "trunc",
        "he",
        128,
        "1*Charb+0.01*g_Spatial+1*Warp",
    )
    compressed = _parsed("--recipe", "small", "--model", "compressed_adacof")
    assert compressed.optimisation.loss == LOSS + "+1*Warp"


def test_print_config_writes_nothing(tmp_path, capsys) -> None:
    argv = ["--recipe", "small", "--out_root", str(tmp_path / "mw"), "--lr", "5e-4", "--print_config"]
    assert train.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recipe"] == "small" and printed["optimisation"]["lr"] == 5e-4
    assert printed["run"]["uid"] == "cdfi_adacof_F_11_D_2" and not (tmp_path / "mw").exists()


def test_resume_with_a_contradicting_flag_is_one_line(tmp_path, capsys) -> None:
    """A resumed run continues with its args.json: --max_steps may grow, --lr may not change."""
    make_set(tmp_path / "data")
    common = ("--batch_size", "2", "--epochs", "3", "--lr", "2e-3")
    assert run_cli(tmp_path, *common, "--max_steps", "1") == 0
    before = (tmp_path / "mw" / "run" / "args.json").read_text()
    assert run_cli(tmp_path, "--batch_size", "2", "--lr", "1e-3", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--lr 0.001 contradicts" in err and "0.002" in err, err
    assert (tmp_path / "mw" / "run" / "args.json").read_text() == before
    assert run_cli(tmp_path, "--max_steps", "2", "--resume") == 0  # the saved lr and epochs are kept
    saved = json.loads((tmp_path / "mw" / "run" / "args.json").read_text())
    assert (saved["optimisation"]["lr"], saved["optimisation"]["epochs"], saved["run"]["max_steps"]) == (2e-3, 3, 2)
    assert load_checkpoint(tmp_path / "mw" / "run" / "checkpoints" / "last.pth").meta["step"] == 2


# ----------------------------------------------------------------------------------------------- published flags


def _vgg_cache(root: Path) -> None:
    """Random VGG16 weights in torchvision's cache layout, for the published CDFI loss's VGG term."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)[:22]
    cache = root / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, cache / "vgg16-397923af.pth")


def test_the_published_command_starts(tmp_path, capsys, monkeypatch) -> None:
    """``train.py --gpu_id 0 --data_dir DIR --batch_size 8``: CDFI with the published loss (VGG included),
    on the CPU with one line when there is no GPU; --use_cudnn sets cudnn.benchmark as published."""
    make_set(tmp_path / "vimeo_triplet", count=8)
    _vgg_cache(tmp_path / "torch_home")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    limits = ["--out_root", str(tmp_path / "mw"), "--test_every", "0", "--max_steps", "1", "--quiet"]
    argv = ["--gpu_id", "0", "--data_dir", str(tmp_path / "vimeo_triplet"), "--batch_size", "8", *limits]
    assert train.main(argv) == 0
    err = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert "note: --gpu_id 0: no CUDA GPU available; running on the CPU" in err
    assert torch.backends.cudnn.benchmark is True  # the published default
    run = tmp_path / "mw" / "cdfi_adacof_F_11_D_2"
    assert set(read_csv(run / "loss.csv")[0]) >= {"Charb", "g_Spatial", "VGG"}
    assert train.main([*argv, "--use_cudnn", "False", "--force"]) == 0
    assert torch.backends.cudnn.benchmark is False


def test_published_values_ours_cannot_honour_name_the_alternative(tmp_path, capsys) -> None:
    make_set(tmp_path / "data")
    cases = [
        (("--optimizer", "OBProxSG"), "prune.py"),
        (("--inactive",), "--print_config"),
        (("--model", "adacofnet"), "--model adacof"),
        (("--use_cudnn", "maybe"), "--use_cudnn"),
    ]
    for i, (extra, needle) in enumerate(cases):
        assert train.main([*cli_args(tmp_path, uid=f"p{i}"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and extra[0] in err, err
        assert not (tmp_path / "mw" / f"p{i}").exists()


def test_published_names_and_values_are_accepted(tmp_path, capsys) -> None:
    """AdaCoF-pytorch's --train/--patch_size/--gt/--out_dir/--load and the published CDFI ones."""
    config = _parsed(
        *("--train", "db/x", "--patch_size", "256", "--gt", "mb/gt", "--out_dir", "runs/a", "--load", "c.pth"),
        *("--num_training_samples", "-1", "--use_cudnn", "False", "--lambda_", "1e-4", "--Np", "5"),
    )
    assert (config.data.data_dir, config.data.crop, config.evaluation.test_gt) == ("db/x", 256, "mb/gt")
    assert (config.run_dir, config.model.init_from, config.data.num_training_samples) == (Path("runs/a"), "c.pth", None)
    assert config.run.use_cudnn is False
    assert _parsed("--checkpoint", "d.pth", "--num_training_samples", "3").model.init_from == "d.pth"
    assert _parsed("--num_training_samples", "0").data.num_training_samples is None  # <= 0: all, as published
    make_set(tmp_path / "data")
    argv = [
        *cli_args(tmp_path),
        "--lambda_",
        "1e-4",
        "--batch_size",
        "1",
        "--num_training_samples",
        "3",
        "--epochs",
        "1",
    ]
    assert train.main(argv) == 0
    assert "only act with OBProxSG" in capsys.readouterr().err
    assert len(read_csv(tmp_path / "mw" / "run" / "loss.csv")) == 3  # one epoch of the 3-triplet subset


def test_published_loop_trains_epochs_minus_one_and_saves_each_improvement(tmp_path) -> None:
    """--published_loop: Middlebury before training is the best to beat; after each of the --epochs - 1
    epochs a strict improvement writes model_epoch_NNN.pth with the published epoch number (ours + 1)."""
    make_set(tmp_path / "data")
    inp, gt = make_middlebury(tmp_path / "mb")
    argv = ("--published_loop", "--epochs", "4", "--batch_size", "2", "--lr", "3e-3", "--test_every", "1")
    assert run_cli(tmp_path, *argv, "--test_input", str(inp), "--test_gt", str(gt)) == 0
    run = tmp_path / "mw" / "run"
    rows = read_csv(run / "eval.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert load_checkpoint(run / "checkpoints" / "last.pth").epoch == 3
    expected, best = [], float(rows[0]["psnr"])
    for r in rows[1:]:
        if float(r["psnr"]) > best:
            best = float(r["psnr"])
            expected.append(f"model_epoch_{int(r['epoch']) + 1:03d}.pth")
    saved = sorted(p.name for p in (run / "checkpoints").glob("model_epoch_*.pth"))
    assert saved == expected and saved, rows
    for name in saved:
        assert load_checkpoint(run / "checkpoints" / name).epoch == int(name[12:15])
    last = load_checkpoint(run / "checkpoints" / saved[-1]).state_dict
    for key, value in load_checkpoint(run / "checkpoints" / "best.pth").state_dict.items():
        assert torch.equal(value, last[key])


def test_keep_last_batch_trains_the_partial_batch(tmp_path) -> None:
    make_set(tmp_path / "data", count=5)
    assert run_cli(tmp_path, "--batch_size", "2", "--epochs", "1", uid="dropped") == 0
    assert run_cli(tmp_path, "--batch_size", "2", "--epochs", "1", "--keep_last_batch", uid="kept") == 0
    assert len(read_csv(tmp_path / "mw" / "dropped" / "loss.csv")) == 2
    assert len(read_csv(tmp_path / "mw" / "kept" / "loss.csv")) == 3
    assert load_checkpoint(tmp_path / "mw" / "kept" / "checkpoints" / "last.pth").epoch == 1


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
