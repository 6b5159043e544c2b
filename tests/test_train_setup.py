"""cdfi.training.setup: a TrainConfig and a Runtime become the Trainer's pieces as the config says (model,
initial weights, data, sampler, optimizer, schedule, loss, extras, options), the run folder holds the
config, and every refusal happens before the folder exists."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import LOSS, make_middlebury, make_set

from cdfi.io.checkpoint import load_checkpoint, save_checkpoint
from cdfi.runtime import Runtime
from cdfi.training.config import EvalConfig, build_config, config_to_dict
from cdfi.training.init import init_he
from cdfi.training.losses import BlurredWarp
from cdfi.training.sampler import ResumableSampler
from cdfi.training.setup import TrainSetupError, middlebury_items, setup_run, validation_items
from models import make_model

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = Runtime(torch.device("cpu"))


def _config(tmp_path, recipe=None, **groups):
    base = {
        "model": {"model": "compressed_adacof"},
        "data": {"data_dir": str(tmp_path / "data"), "workers": 0},
        "optimisation": {"batch_size": 2, "loss": LOSS},
        "run": {"out_root": str(tmp_path / "mw"), "uid": "run", "quiet": True},
        "evaluation": {"test_every": 0},
    }
    for group, values in groups.items():
        base[group] = {**base.get(group, {}), **values}
    return build_config(base, recipe)


def test_the_pieces_follow_the_config(tmp_path) -> None:
    make_set(tmp_path / "data", count=5)
    config = _config(
        tmp_path,
        "small",
        data={"crop": 32, "keep_last_batch": True, "num_training_samples": 4},
        optimisation={"lr": 3e-4, "weight_decay": 1e-5, "optimizer": "ADAM", "decay_type": "step_2_5", "gamma": 0.3},
        run={"steps_per_checkpoint": 7},
        experimental={"blur_warp": 0.5, "grad_clip": 2.0},
    )
    run = setup_run(config, CPU)
    trainer = run.trainer
    model = trainer.model
    assert (model.model_name, model.kernel_size, model.dilation, model.sampling) == ("compressed_adacof", 5, 1, "floor")
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (3e-4, 1e-5)
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.MultiStepLR)
    assert dict(trainer.scheduler.milestones) == {2: 1, 5: 1} and trainer.scheduler.gamma == 0.3
    loader = trainer.loader
    assert (loader.batch_size, loader.drop_last, len(loader)) == (2, False, 2)
    assert isinstance(loader.sampler, ResumableSampler) and loader.sampler.seed == config.optimisation.seed
    data = loader.dataset
    assert (data.crop, data.motion_crop, data.augment, len(data)) == ((32, 32), 0.5, True, 4)
    assert [t.name for t in run.criterion.terms] == ["Charb", "g_Spatial", "g_Occlusion"]
    assert trainer.extra_loss is not None and isinstance(trainer.extra_loss, BlurredWarp)
    assert trainer.extra_loss.weight == 0.5
    assert trainer.options.steps_per_checkpoint == 7 and trainer.options.grad_clip == 2.0
    assert trainer.checkpoint_path == tmp_path / "mw" / "run" / "checkpoints" / "last.pth"
    assert trainer.options.progress is False and trainer.runtime == CPU
    saved = json.loads((tmp_path / "mw" / "run" / "args.json").read_text())
    assert saved == config_to_dict(config)
    assert (tmp_path / "mw" / "run" / "checkpoints").is_dir()
    plain = setup_run(_config(tmp_path, run={"uid": "plain"}), CPU).trainer
    assert plain.extra_loss is None and isinstance(plain.scheduler, torch.optim.lr_scheduler.StepLR)
    assert (plain.scheduler.step_size, plain.scheduler.gamma) == (20, 0.5)
    assert isinstance(plain.optimizer, torch.optim.Adamax) and plain.loader.drop_last


@pytest.mark.parametrize("init", ["published", "he"])
def test_fresh_weights_are_the_seeded_init(tmp_path, init) -> None:
    make_set(tmp_path / "data")
    config = _config(tmp_path, model={"init": init}, optimisation={"seed": 5})
    got = setup_run(config, CPU).trainer.model.state_dict()
    torch.manual_seed(5)
    expected = make_model("compressed_adacof")
    if init == "he":
        init_he(expected, 5)
    for key, value in expected.state_dict().items():
        assert torch.equal(got[key], value), key


def test_init_from_loads_the_checkpoint_weights(tmp_path) -> None:
    make_set(tmp_path / "data")
    torch.manual_seed(9)
    source = make_model("compressed_adacof")
    save_checkpoint(tmp_path / "w.pth", source, epoch=3)
    got = setup_run(_config(tmp_path, model={"init_from": str(tmp_path / "w.pth")}), CPU).trainer
    for key, value in source.state_dict().items():
        assert torch.equal(got.model.state_dict()[key], value)
    assert got.step == 0 and got.epoch == 0  # weights only: the run starts at its own step 0


def test_force_removes_the_earlier_runs_checkpoints(tmp_path) -> None:
    make_set(tmp_path / "data")
    checkpoints = tmp_path / "mw" / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("last.pth", "best.pth", "model_epoch_004.pth", "keep.txt"):
        (checkpoints / name).write_text("old")
    with pytest.raises(TrainSetupError, match="--force"):
        setup_run(_config(tmp_path), CPU)
    setup_run(_config(tmp_path), CPU, force=True)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["keep.txt"]


def test_resume_checks_the_checkpoint(tmp_path) -> None:
    make_set(tmp_path / "data")
    last = tmp_path / "mw" / "run" / "checkpoints" / "last.pth"
    with pytest.raises(TrainSetupError, match="checkpoint not found"):
        setup_run(_config(tmp_path), CPU, resume=str(tmp_path / "missing.pth"))
    assert setup_run(_config(tmp_path), CPU, resume="").resume_path is None  # no last.pth yet: fresh start
    save_checkpoint(last, make_model("compressed_adacof"), epoch=1)
    with pytest.raises(TrainSetupError, match="not a training checkpoint"):
        setup_run(_config(tmp_path), CPU, resume="")
    save_checkpoint(last, make_model("compressed_adacof", sampling="floor"), epoch=1, extra={"optimizer": {}})
    with pytest.raises(TrainSetupError, match="sampling='floor', not 'trunc'"):
        setup_run(_config(tmp_path), CPU, resume="")
    assert load_checkpoint(last).meta["sampling"] == "floor"  # nothing was rewritten


def test_a_set_smaller_than_one_batch_trains_as_one_partial_batch(tmp_path, capsys) -> None:
    make_set(tmp_path / "data", count=3)
    setup = setup_run(_config(tmp_path, optimisation={"batch_size": 4}), CPU)
    assert "fewer than one batch of 4" in capsys.readouterr().err
    batches = list(setup.trainer.loader)
    assert len(batches) == 1 and batches[0][0].shape[0] == 3


def test_refusals_leave_no_run_folder(tmp_path, monkeypatch) -> None:
    make_set(tmp_path / "data", count=3)
    cases = [
        (_config(tmp_path, model={"model": "cdfi_adacof"}), "g_Occlusion"),
        (
            _config(tmp_path, run={"published_loop": True}, evaluation={"test_every": 1, "data_root": str(tmp_path)}),
            "--published_loop",
        ),
    ]
    for config, needle in cases:
        with pytest.raises(ValueError, match=needle):
            setup_run(config, CPU)
        assert not (tmp_path / "mw").exists()
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TrainSetupError, match="not divisible by the 3 processes"):
        setup_run(_config(tmp_path), CPU)


def test_evaluation_sets(tmp_path, capsys) -> None:
    inp, gt = make_middlebury(tmp_path / "mb", count=3)
    items = middlebury_items(EvalConfig(test_input=str(inp), test_gt=str(gt)))
    assert [(i.name, i.frame0, i.gt) for i in items] == [
        (f"seq{k}", inp / f"seq{k}" / "frame10.png", gt / f"seq{k}" / "frame10i11.png") for k in range(3)
    ]
    assert middlebury_items(EvalConfig(test_input=str(inp), test_gt=str(gt), test_every=0)) == []
    with pytest.raises(TrainSetupError, match="Middlebury folder not found"):
        middlebury_items(EvalConfig(test_input=str(tmp_path / "none"), test_gt=str(gt)))
    assert middlebury_items(EvalConfig(data_root=str(tmp_path / "empty"))) == []  # the default may be absent
    assert "no per-epoch Middlebury evaluation" in capsys.readouterr().err
    make_set(tmp_path / "val", count=0, test=10)
    names = [i.name for i in validation_items(EvalConfig(val_dir=str(tmp_path / "val"), val_limit=4))]
    every = [i.name for i in validation_items(EvalConfig(val_dir=str(tmp_path / "val")))]
    assert len(every) == 10 and names == [every[0], every[2], every[5], every[7]]  # evenly spaced, 10/4 apart
