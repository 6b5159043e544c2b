"""The published extended_version/ scripts: pruning.py and get_sparsity_report.py, run as the published
README writes them, on a tiny triplet set and a tiny seeded AdaCoF F5/D1 checkpoint made here.

References: the published train.py's flag defaults (the scripts take its parse_args), the published
report's print formats, numpy counts of the zero/nonzero weights, and the checkpoint files themselves.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cdfi.compression import pruning as pruning_lib
from cdfi.compression.extended import PublishedRun
from cdfi.compression.pruning import PruneResult
from cdfi.io.checkpoint import load_checkpoint, load_model, save_checkpoint
from cdfi.training.losses import PUBLISHED_LOSS
from datasets.benchmark_sets import MIDDLEBURY_SEQUENCES
from models import make_model, published_arch

REPO = Path(__file__).resolve().parent.parent
UID = "adacof_pruned_lr_1e-2_lam_1e-4_Np_10"
# The two commands of the published extended_version/README.md, word for word.
README_PRUNING = shlex.split(
    "--model adacof --kernel_size 5 --dilation 1 --checkpoint ../checkpoints/adacof_F_5_D_1.pth "
    "--optimizer OBProxSG --Np 10 --lr 1e-2 --lambda_ 1e-4 --data_dir path/to/vimeo_triplet "
    "--num_training_samples 1000 --test_input ../test_data/middlebury_others/input/ "
    "--test_gt ../test_data/middlebury_others/gt/ --gpu_id 0 --uid adacof_pruned_lr_1e-2_lam_1e-4_Np_10 --force"
)
README_REPORT = shlex.split(
    "--model adacof --checkpoint ../checkpoints/adacof_pruned_lr_1e-2_lam_1e-4_Np_10.pth "
    "--kernel_size 5 --dilation 1 --inactive"
)
# Defaults of the published train.py's parse_args, which both published scripts use.
PUBLISHED_DEFAULTS = {
    "model": "cdfi_adacof",
    "gpu_id": None,  # the published 0: unset means GPU 0 when there is one, with no CPU note otherwise
    "use_cudnn": True,
    "data_dir": "./vimeo_triplet/",
    "uid": None,
    "checkpoint": None,
    "force": False,
    "test_input": "./test_data/middlebury_others/input",
    "test_gt": "./test_data/middlebury_others/gt",
    "epochs": 100,
    "batch_size": 8,
    "num_training_samples": -1,
    "lr": 0.001,
    "lr_decay": 20,
    "decay_type": "step",
    "gamma": 0.5,
    "optimizer": "ADAMax",
    "weight_decay": 0,
    "lambda_": 1e-4,
    "Np": 5,
    "kernel_size": 11,
    "dilation": 2,
    "inactive": None,
}


def _face(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"extended_{name}", REPO / "extended_version" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faces() -> tuple[ModuleType, ModuleType]:
    return _face("pruning"), _face("get_sparsity_report")


def _tiny_adacof(seed: int) -> nn.Module:
    """AdaCoF F5/D1 with 4 channels wherever the spec sets a width (the F*F and occlusion outputs stay)."""
    arch = published_arch("adacof", 5, 1)
    arch["encoder"] = [[4] * len(row) for row in arch["encoder"]]
    arch["decoder"] = [[4] * len(row) for row in arch["decoder"]]
    arch["heads"] = {name: [4, 4, row[-1]] for name, row in arch["heads"].items()}
    torch.manual_seed(seed)
    return make_model("adacof", 5, 1, arch=arch)


def _png(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(path)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """The folders the README's commands name, relative to ``extended_version/``: ``../checkpoints``,
    ``../test_data/middlebury_others`` and ``path/to/vimeo_triplet`` (three 32x32 triplets)."""
    rng = np.random.default_rng(0)
    save_checkpoint(tmp_path / "checkpoints" / "adacof_F_5_D_1.pth", _tiny_adacof(0), epoch=0)
    for seq in MIDDLEBURY_SEQUENCES:
        for name in ("frame10.png", "frame11.png"):
            _png(tmp_path / "test_data" / "middlebury_others" / "input" / seq / name, rng)
        _png(tmp_path / "test_data" / "middlebury_others" / "gt" / seq / "frame10i11.png", rng)
    vimeo = tmp_path / "extended_version" / "path" / "to" / "vimeo_triplet"
    entries = [f"00001/{i:04d}" for i in range(1, 4)]
    for entry in entries:
        for name in ("im1.png", "im2.png", "im3.png"):
            _png(vimeo / "sequences" / entry / name, rng)
    (vimeo / "tri_trainlist.txt").write_text("\n".join(entries) + "\n")
    return tmp_path


@pytest.fixture()
def pruned_checkpoint(tree: Path) -> Path:
    """A tiny seeded AdaCoF F5/D1 whose convolutions lost a different random share of weights each."""
    model = _tiny_adacof(1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Conv2d)):
            m.weight[torch.rand(m.weight.shape, generator=gen) < (i % 10) / 10] = 0
    return save_checkpoint(tree / "checkpoints" / f"{UID}.pth", model, epoch=5)


def test_both_faces_take_every_published_flag_with_its_default(faces) -> None:
    for face in faces:
        args = face.build_parser().parse_args([])
        for name, value in PUBLISHED_DEFAULTS.items():
            assert getattr(args, name) == value, (face.__name__, name)
        assert args.loss is None  # meaning the published default, named in --help
        assert PUBLISHED_LOSS.replace("*", "") in face.build_parser().format_help().replace("*", "")
    pruning, _ = faces
    args = pruning.build_parser().parse_args(README_PRUNING)
    assert (args.model, args.kernel_size, args.dilation, args.optimizer) == ("adacof", 5, 1, "OBProxSG")
    assert (args.Np, args.lr, args.lambda_, args.num_training_samples) == (10, 1e-2, 1e-4, 1000)
    assert (args.gpu_id, args.uid, args.force) == (0, UID, True)
    assert "--eps" in __import__("prune").build_parser().format_help()


def _recording_prune(calls: list):
    def fake(config, runtime, hooks=None):
        calls.append((config, runtime, hooks))
        return PruneResult(config.out, 1.0, "done", config.epochs, 0)

    return fake


def test_pruning_face_calls_the_library_with_the_published_values(faces, tree, monkeypatch, capsys) -> None:
    pruning, _ = faces
    calls: list = []
    monkeypatch.setattr(pruning, "prune", _recording_prune(calls))
    monkeypatch.chdir(tree / "extended_version")
    assert pruning.main(README_PRUNING) == 0
    ((config, runtime, hooks),) = calls
    folder = Path("model_weights") / UID
    assert config.eps == 0.0  # the published OBProxSG call passes no eps
    assert (config.lr, config.lambda_, config.Np, config.No) == (1e-2, 1e-4, 10, "inf")
    assert (config.num_training_samples, config.samples_at_most, config.batch_size) == (1000, True, 8)
    assert config.epochs == 99 and not config.drop_last  # the published loop: epochs 1..E-1
    assert (config.decay_type, config.lr_decay, config.gamma) == ("step", 20, 0.5)
    assert (config.model, config.kernel_size, config.dilation) == ("adacof", 5, 1)
    assert config.checkpoint == Path("../checkpoints/adacof_F_5_D_1.pth")
    assert config.train_dir == Path("path/to/vimeo_triplet") and config.data_flag == "--data_dir"
    assert config.loss == PUBLISHED_LOSS and config.loss_fallback == "1*Charb+0.01*g_Spatial"
    assert config.out == folder / f"{UID}.pth" and config.state_path == folder / "checkpoints" / "real_time.pth"
    assert config.steps_per_checkpoint == 100 and config.force
    assert isinstance(hooks, PublishedRun) and hooks.folder.root == folder and hooks.total_epochs == 100
    assert [item.name for item in hooks.test_items] == list(MIDDLEBURY_SEQUENCES)
    assert hooks.test_items[0].frame0 == Path("../test_data/middlebury_others/input/Beanbags/frame10.png")
    assert hooks.test_items[0].gt == Path("../test_data/middlebury_others/gt/Beanbags/frame10i11.png")
    err = capsys.readouterr().err
    if torch.cuda.is_available():
        assert runtime.device == torch.device("cuda", 0)
    else:
        assert runtime.device == torch.device("cpu")
        assert "note: --gpu_id 0: no CUDA GPU available; running on the CPU" in err.splitlines()
    assert runtime.precision == "fp32"
    assert not folder.exists()  # the library (not called here) makes the run folder


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_dropped_vgg_term_note_says_where_the_weights_go(tmp_path, monkeypatch, capsys) -> None:
    """The face has no --vgg_weights flag, so the note names torchvision's cache, where they are looked for."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    config = pruning_lib.PruneConfig(
        checkpoint=Path("x.pth"),
        train_dir=Path("trip"),
        out=Path("out.pth"),
        loss=PUBLISHED_LOSS,
        loss_fallback="1*Charb+0.01*g_Spatial",
    )
    loss = pruning_lib._loss(config, "adacof")
    assert [term.name for term in loss.terms] == ["Charb", "g_Spatial"]
    (line,) = capsys.readouterr().err.splitlines()
    assert "the VGG term is dropped" in line and "--vgg_weights" not in line
    assert f"vgg16-397923af.pth in {tmp_path / 'hub' / 'checkpoints'}" in line


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--optimizer": "ADAMax"}, "error: --optimizer ADAMax: pruning.py prunes with OBProxSG only"),
        ({"--model": "sepconv"}, "error: --model sepconv: no such model here"),
        ({"--data_dir": "nowhere"}, "error: --data_dir nowhere: Vimeo-90K triplet folder not found"),
        ({"--data_dir": None}, "error: --data_dir ./vimeo_triplet/: Vimeo-90K triplet folder not found"),
        ({"--test_gt": "../missing"}, "error: --test_gt ../missing: Middlebury folder not found"),
        ({"--epochs": "1"}, "error: --epochs 1: the published loop trains E-1 epochs"),
        ({"--inactive": ""}, "error: --inactive: pruning needs its run folder"),
        ({"--kernel_size": "11", "--dilation": "2"}, "checkpoint holds adacof F5/D1 weights, but adacof F11/D2"),
    ],
)
def test_pruning_face_refuses_what_it_cannot_honour(faces, tree, monkeypatch, capsys, change, needle) -> None:
    pruning, _ = faces
    argv = list(README_PRUNING)
    for flag, value in change.items():
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
        if value is not None:
            argv += [flag] if value == "" else [flag, value]
    monkeypatch.chdir(tree / "extended_version")
    assert pruning.main(argv) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and needle in errors[0]
    assert not Path("model_weights").exists()


def test_pruning_face_refuses_an_occupied_run_folder_without_force(faces, tree, monkeypatch, capsys) -> None:
    pruning, _ = faces
    monkeypatch.chdir(tree / "extended_version")
    folder = Path("model_weights") / UID
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("an earlier run\n")
    argv = [a for a in README_PRUNING if a != "--force"]
    assert pruning.main(argv) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"{folder}: already holds a run (log.txt)" in errors[0] and "--force" in errors[0]
    assert [p.name for p in folder.iterdir()] == ["log.txt"] and (folder / "log.txt").read_text() == "an earlier run\n"


@pytest.mark.slow
def test_readme_pruning_command_runs_as_written(faces, tree, monkeypatch, capsys) -> None:
    pruning, _ = faces
    made: list[dict] = []

    class RecordingOBProxSG(pruning_lib.OBProxSG):
        def __init__(self, params, **kwargs) -> None:
            made.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(pruning_lib, "OBProxSG", RecordingOBProxSG)
    monkeypatch.chdir(tree / "extended_version")
    assert pruning.main(README_PRUNING) == 0
    out = capsys.readouterr().out
    # One step per epoch (3 triplets, batch 8), eps 0 as the published call leaves it.
    assert made == [{"lr": 1e-2, "lambda_": 1e-4, "epochSize": 1, "Np": 10, "No": "inf", "eps": 0.0}]
    folder = Path("model_weights") / UID
    assert "optimizer='OBProxSG'" in (folder / "args.txt").read_text()
    log = (folder / "log.txt").read_text()
    assert log.count("Average:") == 100 and log.count("Testing...") == 99  # initial test + one per epoch
    assert "Train Epoch: [1/100]" in log and "Train Epoch: [99/100]" in log and "Train Epoch: [100/100]" not in log
    for seq in MIDDLEBURY_SEQUENCES:
        assert sorted(p.name for p in (folder / "results" / seq).iterdir()) == [f"{n:03d}.png" for n in range(1, 101)]
    densities = [float(line.split()[3]) for line in out.splitlines() if line.startswith("************* Model density:")]
    assert len(densities) == 99
    final = load_checkpoint(folder / f"{UID}.pth")
    weights = [w.numpy() for w in final.state_dict.values() if w.is_floating_point()]
    nonzero, total = sum(np.count_nonzero(w) for w in weights), sum(w.size for w in weights)
    assert densities[-1] == pytest.approx(nonzero / total, abs=1e-7)
    assert final.meta["pruning"]["eps"] == 0.0 and final.epoch == 99
    assert isinstance(load_model(folder / f"{UID}.pth", "adacof", 5, 1), nn.Module)
    state = load_checkpoint(folder / "checkpoints" / "real_time.pth")
    assert state.meta["step"] == 99 and state.meta["optimizer"]["obproxsg"]["phase"] == "orthant"  # after Np=10
    for best in folder.glob("checkpoints/model_epoch_*.pth"):
        assert 2 <= int(best.stem.rsplit("_", 1)[1]) <= 100


def _published_row(name: str, w: np.ndarray) -> str:
    """A row as the published report prints it, computed here from the weight itself."""
    density = np.count_nonzero(w) / w.size
    c_in, c_out = w.shape[1], w.shape[0]
    reduced = (int(np.sqrt(density) * c_in), int(np.sqrt(density) * c_out))
    return "%50s" % name + "   " + "%.3f" % density + "  %3d  %3d  %3d  %3d" % (c_in, c_out, *reduced)  # noqa: UP031


def test_readme_report_command_runs_as_written(tree, pruned_checkpoint) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "extended_version" / "get_sparsity_report.py"), *README_REPORT],
        cwd=tree / "extended_version",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    state = torch.load(pruned_checkpoint, weights_only=True)["state_dict"]
    assert lines[0] == f"# of model parameters is: {sum(t.numel() for t in state.values())}"
    assert lines[1] == "%35s%24s%4s%5s%6s%5s" % ("Name", "Density", "In", "Out", "In'", "Out'")  # noqa: UP031
    convs = {k: v.numpy() for k, v in state.items() if k.endswith(".weight") and v.dim() == 4}
    assert lines[2:] == [_published_row(name, w) for name, w in convs.items()]
    assert any(int(line.split()[-1]) < int(line.split()[-3]) for line in lines[2:])  # some layers did shrink
    assert not (tree / "extended_version" / "model_weights").exists()  # --inactive writes nothing


def test_report_without_inactive_keeps_its_run_folder(faces, tree, pruned_checkpoint, monkeypatch, capsys) -> None:
    _, report = faces
    monkeypatch.chdir(tree / "extended_version")
    argv = [a for a in README_REPORT if a != "--inactive"] + ["--uid", "r1"]
    assert report.main(argv) == 0
    folder = Path("model_weights") / "r1"
    table = capsys.readouterr().out
    assert "Namespace(" in (folder / "args.txt").read_text()
    assert table.splitlines()[0].startswith("Namespace(")  # the parsed flags, as published
    assert (folder / "log.txt").read_text().splitlines() == table.splitlines()[1:]
    rows = list(csv.DictReader((folder / "sparsity.csv").read_text().splitlines()))
    state = load_checkpoint(pruned_checkpoint).state_dict
    for row in rows:
        w = state[row["layer"] + ".weight"].numpy()
        assert int(row["nonzero"]) == np.count_nonzero(w) and int(row["total"]) == w.size
    with Image.open(folder / "sparsity.png") as img:
        assert img.format == "PNG"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert report.main(argv) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"{folder}: already holds a run" in errors[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert report.main([*argv, "--force"]) == 0
    assert "override this uid r1" in capsys.readouterr().out
    assert (folder / "log.txt.bk1").read_bytes() == before["log.txt"]
    assert (folder / "args.txt.bk1").read_bytes() == before["args.txt"]
    assert report.main([a for a in argv if a not in ("--uid", "r1")]) == 0
    number = capsys.readouterr().out.splitlines()[0].removeprefix("revise the unique id to a random number ")
    (made,) = [p for p in Path("model_weights").iterdir() if p.name != "r1"]
    assert made.name.startswith(f"{int(number)}-") and (made / "sparsity.csv").is_file()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "sepconv", "--checkpoint", "x.pth", "--inactive"], "error: --model sepconv: no such model here"),
        (["--model", "adacof", "--inactive"], "error: --checkpoint: give the pruned checkpoint"),
        (
            ["--model", "adacof", "--checkpoint", "../checkpoints/none.pth", "--inactive"],
            "none.pth: checkpoint not found",
        ),
        (["--model", "adacof", "--checkpoint", f"../checkpoints/{UID}.pth"], "but adacof F11/D2 was asked for"),
    ],
)
def test_report_refuses_bad_input_in_one_line(faces, tree, pruned_checkpoint, monkeypatch, capsys, argv, needle):
    _, report = faces
    monkeypatch.chdir(tree / "extended_version")
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and needle in err
    assert not Path("model_weights").exists() or not any(Path("model_weights").iterdir())


def test_published_reduced_counts_can_be_zero(faces) -> None:
    from cdfi.compression.densities import LayerDensity
    from cdfi.compression.report import format_published_table

    (row,) = format_published_table([LayerDensity("head.7", 64, 1, 606, 1000)]).splitlines()[1:]
    assert row.split()[-4:] == ["64", "1", str(int(math.sqrt(0.606) * 64)), "0"]
