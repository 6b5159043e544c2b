"""cdfi.training.config: defaults are the published train.py's, recipes change what docs/training.md says
they change, documents with an unknown key or a wrong type are one-line errors naming the key, a config
survives the round trip through args.json, and a resumed run keeps its saved config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import train
from cdfi.training.config import (
    GROUPS,
    RECIPE_DIR,
    RECIPES,
    ConfigError,
    ModelConfig,
    TrainConfig,
    build_config,
    config_to_dict,
    flag_of,
    invocation_config,
    read_document,
    resolve,
    resume_config,
)
from cdfi.training.losses import parse_loss

# The defaults of the published tding1/CDFI train.py (its later version, batch 8 as in its README) and of
# the recipe in the project's reference: the values a published command line runs with.
PUBLISHED_TRAIN_PY = {
    "model.model": "cdfi_adacof",
    "model.kernel_size": 11,
    "model.dilation": 2,
    "optimisation.epochs": 100,
    "optimisation.batch_size": 8,
    "optimisation.loss": "1*Charb+0.01*g_Spatial+0.005*VGG",
    "optimisation.lr": 0.001,
    "optimisation.lr_decay": 20,
    "optimisation.decay_type": "step",
    "optimisation.gamma": 0.5,
    "optimisation.optimizer": "ADAMax",
    "optimisation.weight_decay": 0.0,
    "run.use_cudnn": True,
    "data.crop": None,
    "data.augment": True,
    "data.num_training_samples": None,
    "model.sampling": "trunc",
    "evaluation.test_every": 1,
}


def _value(config: TrainConfig, key: str):
    group, name = key.split(".")
    return getattr(getattr(config, group), name)


def _flat(config: TrainConfig) -> dict:
    return {f"{g}.{k}": v for g, values in config_to_dict(config).items() if g in GROUPS for k, v in values.items()}


def test_the_defaults_are_the_published_train_py(monkeypatch) -> None:
    monkeypatch.setattr("cdfi.training.losses.vgg_weights_available", lambda path=None: True)
    config = build_config()
    assert {k: _value(config, k) for k in PUBLISHED_TRAIN_PY} == PUBLISHED_TRAIN_PY
    assert config.recipe == "published" and config.run_dir == Path("model_weights/cdfi_adacof_F_11_D_2")


def test_without_vgg_weights_the_published_loss_drops_only_its_vgg_term(monkeypatch, capsys) -> None:
    monkeypatch.setattr("cdfi.training.losses.vgg_weights_available", lambda path=None: False)
    published = [t for t in parse_loss(PUBLISHED_TRAIN_PY["optimisation.loss"]) if t.name != "VGG"]
    assert parse_loss(build_config().optimisation.loss) == published
    assert "VGG term is dropped" in capsys.readouterr().err
    explicit = build_config({"optimisation": {"loss": "1*Charb+0.005*VGG"}})
    assert explicit.optimisation.loss == "1*Charb+0.005*VGG"  # an explicit VGG loss is kept (and needs weights)


def test_the_small_recipe_changes_the_six_documented_defaults() -> None:
    """docs/training.md: --recipe small changes sampling, init, the loss (+Warp, CDFI without VGG), crop,
    motion crops and the schedule; nothing else."""
    for model in ("cdfi_adacof", "adacof", "compressed_adacof"):
        published = _flat(build_config({"model": {"model": model}}))
        small = _flat(build_config({"model": {"model": model}}, "small"))
        changed = {k for k in small if small[k] != published[k]}
        assert changed == {
            "model.sampling",
            "model.init",
            "optimisation.loss",
            "data.crop",
            "data.motion_crop",
            "optimisation.decay_type",
        }, model
        assert (small["model.sampling"], small["model.init"], small["data.crop"]) == ("floor", "he", 128)
        assert (small["data.motion_crop"], small["optimisation.decay_type"]) == (0.5, "none")
        terms = [t.name for t in parse_loss(small["optimisation.loss"])]
        assert "Warp" in terms and ("VGG" not in terms)


def test_every_recipe_file_is_a_valid_document() -> None:
    assert sorted(p.stem for p in RECIPE_DIR.glob("*.json")) == sorted(RECIPES)
    for name in RECIPES:
        assert isinstance(json.loads((RECIPE_DIR / f"{name}.json").read_text())["description"], str)
        assert build_config(recipe=name).recipe == name


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"optimisation": {"lrr": 1}}, "unknown key 'optimisation.lrr'"),
        ({"optimiser": {"lr": 1}}, "unknown key 'optimiser'"),
        ({"optimisation": {"lr": "fast"}}, 'optimisation.lr: expected a number, got "fast"'),
        ({"optimisation": {"batch_size": 8.5}}, "optimisation.batch_size: expected an integer, got 8.5"),
        ({"optimisation": {"batch_size": True}}, "optimisation.batch_size: expected an integer, got true"),
        ({"data": {"augment": 1}}, "data.augment: expected true or false, got 1"),
        ({"model": {"model": None}}, "model.model: expected a string, got null"),
        ({"experimental": {"blur_sigmas": [2, "x"]}}, "experimental.blur_sigmas: expected a number"),
        ({"run": 3}, "run: expected an object"),
        ({"recipe": 2}, "recipe: expected a string"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, doc, needle) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        build_config(config_path=path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_a_bad_config_file_creates_no_run_folder(tmp_path, capsys) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"optimisation": {"lr": 1e-3, "momentum": 0.9}}')
    argv = ["--config", str(path), "--out_root", str(tmp_path / "mw"), "--data_dir", str(tmp_path)]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train: error: {path}: unknown key 'optimisation.momentum'"
    assert not (tmp_path / "mw").exists()
    (tmp_path / "bad.json").write_text("{")
    assert train.main(["--config", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_config_round_trips_through_args_json(tmp_path, recipe) -> None:
    """config -> args.json -> config is the identity, and --config args.json rebuilds the same run."""
    config = build_config(
        {"model": {"model": "compressed_adacof"}, "experimental": {"blur_sigmas": (1.5, 3.0)}, "run": {"uid": "a"}},
        recipe,
    )
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config_to_dict(config), indent=2))
    assert resolve(read_document(path, partial=False)) == config
    assert build_config(config_path=path) == config
    assert build_config({"optimisation": {"lr": 0.5}}, config_path=path).optimisation.lr == 0.5  # flags on top


def test_config_values_are_validated_with_the_flag_name() -> None:
    cases = [
        (lambda: ModelConfig(grow_from="a", init_from="b"), "pass one"),
        (lambda: build_config({"data": {"crop": 8}}), "--crop 8 is too small"),
        (lambda: build_config({"optimisation": {"optimizer": "OBProxSG"}}), "prune.py"),
        (lambda: build_config({"optimisation": {"decay_type": "cosine"}}), "--decay_type"),
        (lambda: build_config({"optimisation": {"loss": "1*Charb+2*Charb"}}), "--loss"),
        (lambda: build_config({"run": {"published_loop": True}, "evaluation": {"test_every": 2}}), "--test_every"),
        (lambda: build_config({"run": {"out_dir": "x", "uid": "y"}}), "--out_dir"),
        (lambda: build_config({"run": {"uid": "a/b"}}), "--uid"),
        (lambda: build_config({"data": {"num_training_samples": 0}}), "--num_training_samples"),
        (lambda: build_config(recipe="large"), "--recipe large"),
    ]
    for make, needle in cases:
        with pytest.raises(ConfigError, match=None) as info:
            make()
        assert needle in str(info.value), str(info.value)


def test_every_field_has_its_flag_in_train_py() -> None:
    """The CLI exposes every field of the config under the flag that error messages name."""
    actions = {a.dest: a.option_strings for a in train.build_parser()._actions}
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            key = f"{group}.{f.name}"
            assert key in actions and flag_of(key) in actions[key], key


def _saved(tmp_path: Path, **groups) -> tuple[TrainConfig, Path]:
    config = build_config({"run": {"out_root": str(tmp_path)}, **groups}, "small")
    path = config.run_dir / "args.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config_to_dict(config)))
    return config, path


def test_resume_keeps_the_saved_config_and_names_a_contradiction(tmp_path) -> None:
    saved, path = _saved(tmp_path, optimisation={"lr": 2.5e-4})
    given = {"run": {"out_root": str(tmp_path), "max_steps": 50}, "data": {"workers": 0}}
    resumed = invocation_config(given, None, None, resume="")
    assert resumed.optimisation.lr == 2.5e-4 and resumed.recipe == "small"  # from args.json, not the defaults
    assert (resumed.run.max_steps, resumed.data.workers) == (50, 0)  # per-invocation fields follow the flags
    assert dataclasses.replace(resumed, run=saved.run, data=saved.data) == saved
    with pytest.raises(ConfigError) as info:
        invocation_config({"run": {"out_root": str(tmp_path)}, "optimisation": {"lr": 1e-3}}, None, None, resume="")
    assert str(info.value).startswith("--lr 0.001 contradicts the run's saved config") and str(path) in str(info.value)
    with pytest.raises(ConfigError, match="--recipe"):
        invocation_config({"run": {"out_root": str(tmp_path)}}, "published", None, resume="")
    same = {"run": {"out_root": str(tmp_path)}, "optimisation": {"lr": 2.5e-4}, "model": {"sampling": "floor"}}
    assert invocation_config(same, "small", None, resume="") == saved  # repeating the command is fine
    fresh = invocation_config({"run": {"out_root": str(tmp_path)}}, None, None, resume=None)
    assert fresh.recipe == "published"  # without --resume the saved config is not read


def test_resume_of_a_flat_args_json_of_the_earlier_train_py(tmp_path) -> None:
    """Run folders of the earlier train.py (a flat args.json) resume with their values; one that used a
    removed lever is refused, naming it."""
    config = build_config({"run": {"out_root": str(tmp_path)}, "model": {"model": "compressed_adacof"}})
    run = config.run_dir
    run.mkdir(parents=True)
    flat = {
        "model": "compressed_adacof",
        "kernel_size": 5,
        "dilation": 1,
        "sampling": "floor",
        "lr": 2.5e-4,
        "no_augment": True,
        "blur_sigmas": "2,4,8",
        "offset_init": 0.0,
        "warmup_steps": 0,
        "precision": "bf16",
        "world_size": 1,
        "uid": run.name,
        "out_root": str(tmp_path),
        "recipe": "small",
        "resume": "",
        "force": False,
    }
    (run / "args.json").write_text(json.dumps(flat))
    given = {"run": {"out_root": str(tmp_path)}, "model": {"model": "compressed_adacof"}}
    resumed = resume_config(config, given, run / "args.json")
    assert (resumed.model.sampling, resumed.optimisation.lr, resumed.data.augment) == ("floor", 2.5e-4, False)
    assert resumed.experimental.blur_sigmas == (2.0, 4.0, 8.0) and resumed.recipe == "small"
    (run / "args.json").write_text(json.dumps({**flat, "offset_init": 0.25}))
    with pytest.raises(ConfigError, match="--offset_init 0.25, which train.py no longer has"):
        resume_config(config, given, run / "args.json")
