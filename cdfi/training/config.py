"""The typed configuration of a training run: frozen dataclasses that validate themselves.

A run is described by one ``TrainConfig`` of six groups (``model``, ``data``, ``optimisation``,
``run``, ``evaluation``, ``experimental``), built in layers: the dataclass defaults (the published
recipe), then a recipe (``cdfi/training/recipes/<name>.json``, selected by ``--recipe``), then a
config file (``--config run.json``), then the flags given on the command line. The result is
resolved (kernel size, dilation, loss and run name filled in from the model family) and written to
the run folder as ``args.json``, which ``--resume`` reads back: a resumed run continues with its
saved config, and a flag given again that contradicts it is an error, except for the few that only
steer one invocation (``RESUMABLE``).

Documents (recipes, config files, ``args.json``) are JSON objects with the group names as keys and
the field names inside, e.g. ``{"optimisation": {"lr": 2.5e-4}}``; a recipe may also give the loss per
model family (``{"optimisation": {"loss": {"cdfi_adacof": "..."}}}``) and a ``description``. An
unknown key or a value of the wrong type is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdfi.training.init import INITS
from cdfi.training.losses import DEFAULT_LOSSES, parse_loss, without_missing_vgg
from cdfi.training.optim import OPTIMIZERS, check_decay_type
from cupy_module import SAMPLING_RULES
from models import DEFAULT_SAMPLING, DEFAULT_SIZES, list_models, variant_name
from models.adacof import MIN_FRAME_SIZE

__all__ = [
    "GROUPS",
    "RECIPES",
    "RECIPE_DIR",
    "RESUMABLE",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentalConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "build_config",
    "config_to_dict",
    "flag_of",
    "invocation_config",
    "load_recipe",
    "read_document",
    "resolve",
    "resume_config",
]

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
RECIPES = ("published", "small")

# Fields a resumed run may change: they steer one invocation, not what the run trains.
RESUMABLE = frozenset(
    {
        "optimisation.epochs",
        "run.max_steps",
        "run.max_minutes",
        "run.steps_per_checkpoint",
        "run.log_every",
        "run.quiet",
        "run.use_cudnn",
        "data.workers",
    }
)


class ConfigError(ValueError):
    """A configuration that cannot run: a bad value, an unknown key, a wrong type (one line)."""


def _positive(name: str, value: float | None, *, zero: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ConfigError(f"--{name} must be {'>= 0' if zero else 'positive'}, got {value}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--{name} is a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network is trained and where its weights start."""

    model: str = "cdfi_adacof"
    kernel_size: int | None = None
    dilation: int | None = None
    arch: str | None = None
    sampling: str = DEFAULT_SAMPLING
    legacy_grad: bool = False
    init: str = "published"
    init_from: str | None = None
    grow_from: str | None = None

    def __post_init__(self) -> None:
        if self.model not in list_models():
            hint = " (AdaCoF-pytorch's adacofnet is --model adacof)" if self.model in ("adacofnet", "adc") else ""
            raise ConfigError(f"--model {self.model}: unknown model; use one of {', '.join(list_models())}{hint}")
        _positive("kernel_size", self.kernel_size)
        _positive("dilation", self.dilation)
        if self.sampling not in SAMPLING_RULES:
            raise ConfigError(f"--sampling {self.sampling}: use one of {', '.join(SAMPLING_RULES)}")
        if self.init not in INITS:
            raise ConfigError(f"--init {self.init}: use one of {', '.join(INITS)}")
        if self.grow_from and self.init_from:
            raise ConfigError("--grow_from and --init_from both give the starting weights; pass one")


@dataclass(frozen=True)
class DataConfig:
    """The training triplets and how they are cut and augmented."""

    data_dir: str = "db/vimeo_triplet"
    crop: int | None = None
    augment: bool = True
    motion_crop: float = 0.0
    motion_candidates: int = 8
    num_training_samples: int | None = None
    keep_last_batch: bool = False
    workers: int = 2

    def __post_init__(self) -> None:
        if self.crop is not None and self.crop < 1:
            raise ConfigError(f"--crop must be positive, got {self.crop}")
        if self.crop is not None and self.crop < MIN_FRAME_SIZE:
            raise ConfigError(
                f"--crop {self.crop} is too small: the networks need frames of at least {MIN_FRAME_SIZE} px"
            )
        _probability("motion_crop", self.motion_crop)
        _positive("motion_candidates", self.motion_candidates)
        _positive("num_training_samples", self.num_training_samples)
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class OptimConfig:
    """Batch, optimizer, schedule and loss (the published recipe's by default)."""

    batch_size: int = 8
    epochs: int = 100
    lr: float = 1e-3
    lr_decay: int = 20
    decay_type: str = "step"
    gamma: float = 0.5
    optimizer: str = "ADAMax"
    weight_decay: float = 0.0
    loss: str | None = None
    vgg_weights: str | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        _positive("epochs", self.epochs)
        _positive("lr", self.lr, zero=True)
        _positive("weight_decay", self.weight_decay, zero=True)
        _positive("gamma", self.gamma)
        if self.optimizer == "OBProxSG":
            raise ConfigError(
                "--optimizer OBProxSG: train.py trains without the l1 penalty; prune with "
                "prune.py --checkpoint CKPT --lambda_ L --Np N instead"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer}: use one of {', '.join(OPTIMIZERS)}")
        try:
            check_decay_type(self.decay_type)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.decay_type == "step":
            _positive("lr_decay", self.lr_decay)
        if self.loss is not None:
            try:
                parse_loss(self.loss)
            except ValueError as exc:
                raise ConfigError(f"--loss: {exc}") from None


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives and how long this invocation trains."""

    uid: str | None = None
    out_root: str = "model_weights"
    out_dir: str | None = None
    steps_per_checkpoint: int = 500
    max_steps: int | None = None
    max_minutes: float | None = None
    log_every: int = 20
    quiet: bool = False
    published_loop: bool = False
    use_cudnn: bool = True

    def __post_init__(self) -> None:
        if self.uid is not None and (not self.uid or "/" in self.uid or self.uid in (".", "..")):
            raise ConfigError(f"--uid {self.uid!r}: must be a plain folder name")
        _positive("steps_per_checkpoint", self.steps_per_checkpoint, zero=True)
        _positive("max_steps", self.max_steps)
        _positive("max_minutes", self.max_minutes)
        _positive("log_every", self.log_every)


@dataclass(frozen=True)
class EvalConfig:
    """What is measured while training: Middlebury every N epochs, a validation split every N steps."""

    data_root: str | None = None
    test_input: str | None = None
    test_gt: str | None = None
    test_every: int = 1
    val_dir: str | None = None
    val_every: int = 200
    val_limit: int | None = None

    def __post_init__(self) -> None:
        _positive("test_every", self.test_every, zero=True)
        _positive("val_every", self.val_every)
        _positive("val_limit", self.val_limit)


@dataclass(frozen=True)
class ExperimentalConfig:
    """Levers of the small-budget ablations that are not part of a recipe (docs/training.md)."""

    synthetic: float = 0.0
    synthetic_shift: float = 4.0
    blur_warp: float = 0.0
    blur_sigmas: tuple[float, ...] = (2.0, 4.0, 8.0)
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        _probability("synthetic", self.synthetic)
        _positive("synthetic_shift", self.synthetic_shift)
        _positive("blur_warp", self.blur_warp, zero=True)
        if not self.blur_sigmas or not all(math.isfinite(s) and s > 0 for s in self.blur_sigmas):
            raise ConfigError(f"--blur_sigmas must be positive numbers, got {list(self.blur_sigmas)}")
        _positive("grad_clip", self.grad_clip)


GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optimisation": OptimConfig,
    "run": RunConfig,
    "evaluation": EvalConfig,
    "experimental": ExperimentalConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the recipe it started from and its six groups."""

    recipe: str = "published"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimisation: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    experimental: ExperimentalConfig = field(default_factory=ExperimentalConfig)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"--recipe {self.recipe}: use one of {', '.join(RECIPES)}")
        if self.run.published_loop and self.evaluation.test_every != 1:
            raise ConfigError(
                "--published_loop evaluates on Middlebury after every epoch; drop --test_every "
                f"{self.evaluation.test_every}"
            )
        if self.run.out_dir is not None and self.run.uid is not None:
            raise ConfigError("--out_dir is the run folder itself; pass it or --uid, not both")

    @property
    def run_dir(self) -> Path:
        """The run folder: ``--out_dir``, else ``<out_root>/<uid>``."""
        if self.run.out_dir is not None:
            return Path(self.run.out_dir)
        return Path(self.run.out_root) / str(self.run.uid)


# ----------------------------------------------------------------------------------------------- documents


def flag_of(key: str) -> str:
    """The command-line flag of a dotted key (``optimisation.lr`` -> ``--lr``)."""
    return {"data.augment": "--no_augment", "recipe": "--recipe"}.get(key, "--" + key.rsplit(".", 1)[-1])


def _typed(key: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` checked against the field type ``hint`` (ints accepted for floats, lists for tuples)."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        (hint,) = (a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        item = args[0]
        return tuple(_typed(key, v, item, source) for v in value)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    expected = names.get(hint, "a list of numbers")
    raise ConfigError(f"{source}: {key}: expected {expected}, got {json.dumps(value)}")


def _check_document(doc: Any, source: str, *, partial: bool) -> dict[str, Any]:
    """Keys and types of a configuration document; returns it with values converted to field types."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object of the groups {', '.join(GROUPS)}")
    out: dict[str, Any] = {}
    for group, values in doc.items():
        if group == "recipe":
            out[group] = _typed(group, values, str, source)
            continue
        if group == "description" and partial:
            _typed(group, values, str, source)
            continue
        if group not in GROUPS:
            raise ConfigError(f"{source}: unknown key {group!r}; expected recipe or one of {', '.join(GROUPS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {group}: expected an object of its fields")
        hints = typing.get_type_hints(GROUPS[group])
        checked: dict[str, Any] = {}
        for name, value in values.items():
            key = f"{group}.{name}"
            if name not in hints:
                raise ConfigError(f"{source}: unknown key {key!r}")
            if key == "optimisation.loss" and partial and isinstance(value, dict):
                unknown = [m for m in value if m not in list_models()]
                if unknown:
                    raise ConfigError(f"{source}: {key}: unknown model {unknown[0]!r}")
                checked[name] = {m: _typed(f"{key}.{m}", v, str, source) for m, v in value.items()}
                continue
            checked[name] = _typed(key, value, hints[name], source)
        out[group] = checked
    return out


def read_document(path: str | Path, *, partial: bool = True) -> dict[str, Any]:
    """A configuration document from a JSON file (``--config``, a recipe, ``args.json``), checked."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: configuration file not found") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return _check_document(doc, str(path), partial=partial)


def load_recipe(name: str) -> dict[str, Any]:
    """The document of recipe ``name`` (``cdfi/training/recipes/<name>.json``)."""
    if name not in RECIPES:
        raise ConfigError(f"--recipe {name}: use one of {', '.join(RECIPES)}")
    return read_document(RECIPE_DIR / f"{name}.json")


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key in GROUPS:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optimisation": {"lr": 1}}`` -> ``{"optimisation.lr": 1}`` (groups only)."""
    flat: dict[str, Any] = {}
    for group, values in doc.items():
        if group in GROUPS and isinstance(values, dict):
            flat.update({f"{group}.{k}": v for k, v in values.items()})
        elif group == "recipe":
            flat[group] = values
    return flat


def default_loss(model: str, vgg_weights: str | None = None) -> str:
    """The family's published loss; without ImageNet VGG16 weights on this machine (none can be
    downloaded here) its VGG term is dropped with a one-line note, so that the published command runs
    as written. An explicit ``--loss`` with VGG still needs the weights (one-line error)."""
    loss = DEFAULT_LOSSES[model]
    return without_missing_vgg(loss, vgg_weights, f"pass --vgg_weights PATH for {loss}")


def resolve(doc: Mapping[str, Any]) -> TrainConfig:
    """Build the ``TrainConfig`` of a merged document and fill in what follows from the model family:
    kernel size and dilation, the loss (a per-family mapping picks the family's), the run name."""
    groups = {g: dict(doc.get(g, {})) for g in GROUPS}
    model = ModelConfig(**groups["model"])
    default_k, default_d = DEFAULT_SIZES[model.model]
    model = dataclasses.replace(
        model,
        kernel_size=model.kernel_size if model.kernel_size is not None else default_k,
        dilation=model.dilation if model.dilation is not None else default_d,
    )
    loss = groups["optimisation"].get("loss")
    if isinstance(loss, dict):
        if model.model not in loss:
            raise ConfigError(f"the recipe gives no loss for --model {model.model}; pass --loss")
        loss = loss[model.model]
    if loss is None:
        loss = default_loss(model.model, groups["optimisation"].get("vgg_weights"))
    groups["optimisation"]["loss"] = loss
    run = groups["run"]
    if run.get("uid") is None and run.get("out_dir") is None:
        run["uid"] = variant_name(model.model, model.kernel_size, model.dilation)
    return TrainConfig(
        recipe=str(doc.get("recipe", "published")),
        model=model,
        **{g: GROUPS[g](**groups[g]) for g in GROUPS if g != "model"},
    )


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a JSON-ready nested dict (the format of ``args.json`` and ``--print_config``)."""
    out: dict[str, Any] = {"recipe": config.recipe}
    for group in GROUPS:
        values = dataclasses.asdict(getattr(config, group))
        out[group] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out


def build_config(
    overrides: Mapping[str, Any] | None = None,
    recipe: str | None = None,
    config_path: str | Path | None = None,
) -> TrainConfig:
    """Defaults, then the recipe (``recipe``, else the config file's, else ``published``), then the
    config file, then ``overrides`` (a document of the flags given on the command line)."""
    file_doc = read_document(config_path) if config_path is not None else {}
    name = recipe or file_doc.get("recipe") or "published"
    doc = _merge(_merge(load_recipe(name), file_doc), _check_document(dict(overrides or {}), "flags", partial=True))
    doc["recipe"] = name
    doc.pop("description", None)
    return resolve(doc)


def _get(config: TrainConfig, key: str) -> Any:
    if key == "recipe":
        return config.recipe
    group, name = key.split(".")
    return getattr(getattr(config, group), name)


def _show(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def resume_config(
    fresh: TrainConfig,
    given: Mapping[str, Any],
    saved_path: str | Path,
) -> TrainConfig:
    """The config of a resumed run: the one saved in ``saved_path`` (``args.json``), with the
    ``RESUMABLE`` fields taken from ``fresh`` where ``given`` (the document of the flags, config file
    and recipe given this time) names them. Any other given value that differs from the saved one is a
    ``ConfigError`` naming the flag."""
    saved_doc = read_document(saved_path, partial=False) if _is_current(saved_path) else _legacy(saved_path)
    saved = resolve(saved_doc)
    changes: dict[str, dict[str, Any]] = {}
    for key in _flatten(given):
        new, old = _get(fresh, key), _get(saved, key)
        if new == old:
            continue
        if key not in RESUMABLE:
            raise ConfigError(
                f"{flag_of(key)} {_show(new)} contradicts the run's saved config ({saved_path}: {key} = "
                f"{_show(old)}); drop it to continue the run, or start a new one (--uid, or --force to start afresh)"
            )
        group, name = key.split(".")
        changes.setdefault(group, {})[name] = new
    return dataclasses.replace(
        saved, **{g: dataclasses.replace(getattr(saved, g), **values) for g, values in changes.items()}
    )


# ----------------------------------------------------------------------------------------------- older runs

# Flags of train.py before the typed configuration that are gone, with the value that meant "off";
# the second set only qualified one of them.
REMOVED_FLAGS: dict[str, Any] = {
    "offset_init": 0.0,
    "weight_temperature": 1.0,
    "head_lr": None,
    "flow_warmstart": 0,
    "flow_distill": 0.0,
    "blend_bias": None,
    "color_augment": 0.0,
    "scale_augment": 0.0,
    "warmup_steps": 0,
}
_LEGACY_IGNORED = ("flow_warmstart_weight", "scale_range", "precision", "amp", "device", "threads", "world_size")


def _is_current(path: str | Path) -> bool:
    """Whether ``path`` holds a grouped config (``args.json`` of this code) rather than a flat one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return True  # read_document reports the problem
    return not (isinstance(doc, dict) and isinstance(doc.get("model"), str))


def _legacy(path: str | Path) -> dict[str, Any]:
    """A flat ``args.json`` of the earlier ``train.py`` as a document; a run that used a removed lever
    cannot be continued by this code."""
    flat = json.loads(Path(path).read_text())
    homes = {name: group for group, cls in GROUPS.items() for name in typing.get_type_hints(cls)}
    doc: dict[str, Any] = {"recipe": flat.get("recipe", "published")}
    for name, value in flat.items():
        if name in REMOVED_FLAGS:
            if value != REMOVED_FLAGS[name]:
                raise ConfigError(
                    f"{path}: the run used --{name} {value}, which train.py no longer has "
                    "(docs/training.md, 'Ablation levers'); continue it with the commit named there"
                )
            continue
        if name in _LEGACY_IGNORED or name in ("recipe", "resume", "force"):
            continue
        if name == "no_augment":
            doc.setdefault("data", {})["augment"] = not value
            continue
        if name == "blur_sigmas" and isinstance(value, str):
            value = [float(v) for v in value.split(",")]
        if name not in homes:
            raise ConfigError(f"{path}: unknown key {name!r}")
        doc.setdefault(homes[name], {})[name] = value
    return _check_document(doc, str(path), partial=False)


def invocation_config(
    overrides: Mapping[str, Any] | None = None,
    recipe: str | None = None,
    config_path: str | Path | None = None,
    resume: str | None = None,
) -> TrainConfig:
    """The config one invocation trains with: ``build_config`` of what it was given, or, when it
    resumes a run folder that holds ``args.json``, that saved config (``resume_config``)."""
    fresh = build_config(overrides, recipe, config_path)
    saved = fresh.run_dir / "args.json"
    if resume is None or not saved.is_file():
        return fresh
    given = _merge(read_document(config_path) if config_path is not None else {}, dict(overrides or {}))
    if recipe is not None:
        given["recipe"] = recipe
    return resume_config(fresh, given, saved)
