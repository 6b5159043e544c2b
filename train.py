"""Train a CDFI / AdaCoF model with the published recipe; resumable, distributed, mixed precision.

    python train.py --gpu_id 0 --data_dir path/to/vimeo_triplet/ --batch_size 8   # the published command
    python train.py --data_dir db/offline --model compressed_adacof --recipe small \\
        --precision bf16 --max_minutes 30 --resume                               # one chunk of a long run
    python train.py --recipe small --print_config                                # the resolved config
    torchrun --nproc_per_node 4 train.py --data_dir db/vimeo_triplet             # DDP (gloo on CPU, NCCL on GPU)

Defaults are the published recipe (tding1/CDFI train.py): batch 8, Adamax lr 1e-3, StepLR every 20
epochs by 0.5, 100 epochs, the family's published loss, full frames, hflip/vflip/temporal swap,
Middlebury PSNR/SSIM after every epoch with the best kept. Every flag of the published train.py (and
of AdaCoF-pytorch's) is accepted with its published meaning; where ours differs, on purpose, is in
docs/published_differences.md. ``--batch_size`` is the global batch: under torchrun every process
takes batch_size / world_size, each on the GPU of its local rank.

A run is one typed configuration (cdfi/training/config.py): the defaults, then ``--recipe``
(cdfi/training/recipes/), then ``--config FILE``, then the flags given. It is written to the run
folder ``model_weights/<uid>/`` (``--uid`` defaults to the variant name, so the same command line
continues with ``--resume``) as ``args.json``, beside ``log.txt``, ``loss.csv``, ``eval.csv``,
``val.csv``, ``curves.png``, ``checkpoints/last.pth`` (everything needed to resume) and
``checkpoints/best.pth``. A resumed run continues with its saved configuration.

This file is the command line only: ``cdfi.training.config`` turns the flags into a ``TrainConfig``
and ``cdfi.training.run.train`` trains it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any, NoReturn

from cdfi.cli import UsageError, run_cli
from cdfi.runtime import add_runtime_arguments, resolve_runtime
from cdfi.training.config import (
    RECIPES,
    REMOVED_FLAGS,
    DataConfig,
    EvalConfig,
    ExperimentalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    config_to_dict,
    invocation_config,
)
from cdfi.training.init import INITS
from cdfi.training.losses import DEFAULT_LOSSES
from cdfi.training.optim import OPTIMIZERS
from cdfi.training.run import train
from cupy_module import SAMPLING_RULES
from models import list_models

MODEL, DATA, OPT, RUN, EVAL, EXP = (
    ModelConfig(),
    DataConfig(),
    OptimConfig(),
    RunConfig(),
    EvalConfig(),
    ExperimentalConfig(),
)
SUPPRESS = argparse.SUPPRESS


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (``train: error: ...``, exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"train: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _bool(text: str) -> bool:
    """``--use_cudnn True/False`` (the published flag is ``type=bool``; here ``False`` means false)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _samples(text: str) -> int | None:
    """``--num_training_samples N``; as published, N <= 0 (the default -1) means every triplet."""
    value = int(text)
    return None if value <= 0 else value


def _floats(text: str) -> tuple[float, ...]:
    """``2,4,8`` -> (2.0, 4.0, 8.0)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


class _Removed(argparse.Action):
    """A lever that was removed: one line saying so and where its results are."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        parser.error(
            f"{option} was removed (measured without a lasting gain); its results and the commit that last had "
            "it are in docs/training.md, 'Ablation levers'"
        )


class _Amp(argparse.Action):
    """The earlier mixed-precision switch: one line naming its replacement."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        parser.error("--amp was replaced by --precision: bf16 (CPU, or a GPU of compute capability 8.0+) or fp16 (GPU)")


def _option(group: argparse._ArgumentGroup, *flags: str, dest: str, default: Any = None, **kwargs: Any) -> None:
    """A config option: parsed into ``dest`` (``group.field``) only when given, its default in the help."""
    text = kwargs.pop("help")
    if kwargs.get("action") is None:
        kwargs.setdefault("metavar", dest.rsplit(".", 1)[-1].upper())
    if default is not None and "%(default)" not in text and kwargs.get("action") is None:
        text += f" (default {default})"
    group.add_argument(*flags, dest=dest, default=SUPPRESS, help=text.replace("%", "%%"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Every flag of train.py, grouped as in ``--help``."""
    p = Parser(
        prog="train.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("recipe and configuration")
    g.add_argument(
        "--recipe",
        choices=RECIPES,
        default=None,
        help="defaults to start from: published (default) or small (learns motion within minutes on a CPU; "
        "cdfi/training/recipes/small.json); flags given explicitly still win",
    )
    g.add_argument("--config", metavar="FILE", help="a JSON configuration (e.g. a run's args.json) under the flags")
    g.add_argument("--print_config", action="store_true", help="print the resolved configuration as JSON and exit")

    g = p.add_argument_group("model")
    _option(g, "--model", dest="model.model", default=MODEL.model, metavar="NAME", help=f"{', '.join(list_models())}")
    _option(
        g, "--kernel_size", dest="model.kernel_size", type=int, help="kernel size F (default: the family's published F)"
    )
    _option(g, "--dilation", dest="model.dilation", type=int, help="dilation D (default: the family's published D)")
    _option(g, "--arch", dest="model.arch", metavar="JSON", help="architecture spec (e.g. from compress.py)")
    _option(
        g,
        "--sampling",
        dest="model.sampling",
        choices=SAMPLING_RULES,
        default=MODEL.sampling,
        help="warp sampling rule: trunc = published, floor = true bilinear (--recipe small)",
    )
    _option(g, "--legacy_grad", dest="model.legacy_grad", action="store_true", help="the published warp backward pass")
    _option(
        g,
        "--init",
        dest="model.init",
        choices=INITS,
        default=MODEL.init,
        help="init of a fresh start: published (PyTorch default) or he (He normal; --recipe small)",
    )
    _option(
        g,
        "--init_from",
        "--checkpoint",
        "--load",
        dest="model.init_from",
        metavar="CKPT",
        help="start from the weights of this checkpoint (not its optimizer state; --load is AdaCoF-pytorch's "
        "name, --checkpoint the published CDFI one's)",
    )
    _option(
        g,
        "--grow_from",
        dest="model.grow_from",
        metavar="CKPT",
        help="start CDFI from a trained AdaCoF-family checkpoint of other widths or F/D (cdfi/training/grow.py)",
    )

    g = p.add_argument_group("data")
    _option(
        g,
        "--data_dir",
        "--train",
        dest="data.data_dir",
        default=DATA.data_dir,
        metavar="DIR",
        help="Vimeo-90K-layout triplet folder (--train: AdaCoF-pytorch's name)",
    )
    _option(
        g,
        "--crop",
        "--patch_size",
        dest="data.crop",
        type=int,
        metavar="N",
        help="random square crop (default: full frames, published; 128 --recipe small; --patch_size: "
        "AdaCoF-pytorch's name)",
    )
    _option(g, "--no_augment", dest="data.augment", action="store_false", help="no flips and no temporal swap")
    _option(
        g,
        "--motion_crop",
        dest="data.motion_crop",
        type=float,
        metavar="P",
        help="probability of taking the most moving of --motion_candidates crops (0; 0.5 --recipe small)",
    )
    _option(
        g,
        "--motion_candidates",
        dest="data.motion_candidates",
        type=int,
        default=DATA.motion_candidates,
        metavar="N",
        help="crop candidates",
    )
    _option(
        g,
        "--num_training_samples",
        dest="data.num_training_samples",
        type=_samples,
        metavar="N",
        help="train on a seeded random subset of N triplets (published; <= 0: all, the default)",
    )
    _option(
        g,
        "--keep_last_batch",
        dest="data.keep_last_batch",
        action="store_true",
        help="also train the smaller last batch of each epoch (published; ours drops it)",
    )
    _option(
        g,
        "--workers",
        dest="data.workers",
        type=int,
        default=DATA.workers,
        metavar="N",
        help="data loader processes (published: 8)",
    )

    g = p.add_argument_group("optimisation (the published recipe by default)")
    _option(
        g,
        "--batch_size",
        dest="optimisation.batch_size",
        type=int,
        default=OPT.batch_size,
        metavar="N",
        help="global batch size",
    )
    _option(
        g, "--epochs", dest="optimisation.epochs", type=int, default=OPT.epochs, metavar="N", help="epochs to train"
    )
    _option(g, "--lr", dest="optimisation.lr", type=float, default=OPT.lr, help="learning rate")
    _option(
        g,
        "--lr_decay",
        dest="optimisation.lr_decay",
        type=int,
        default=OPT.lr_decay,
        metavar="N",
        help="StepLR period in epochs",
    )
    _option(
        g,
        "--decay_type",
        dest="optimisation.decay_type",
        default=OPT.decay_type,
        metavar="TYPE",
        help="step, step_E1_E2... (MultiStepLR) or none (--recipe small)",
    )
    _option(g, "--gamma", dest="optimisation.gamma", type=float, default=OPT.gamma, help="lr decay factor")
    _option(
        g,
        "--optimizer",
        dest="optimisation.optimizer",
        default=OPT.optimizer,
        metavar="NAME",
        help=", ".join(OPTIMIZERS),
    )
    _option(
        g, "--weight_decay", dest="optimisation.weight_decay", type=float, default=OPT.weight_decay, help="weight decay"
    )
    _option(
        g,
        "--loss",
        dest="optimisation.loss",
        metavar="SPEC",
        help=f"loss string (default: the family's published loss, {DEFAULT_LOSSES['cdfi_adacof']} for CDFI, "
        f"{DEFAULT_LOSSES['adacof']} for the AdaCoF family; terms Charb, L1, MSE, VGG, Warp, Context, g_*)",
    )
    _option(g, "--vgg_weights", dest="optimisation.vgg_weights", metavar="FILE", help="ImageNet VGG16 weights for VGG")
    _option(g, "--seed", dest="optimisation.seed", type=int, default=OPT.seed, help="seed of weights, order and crops")
    g.add_argument(
        "--lambda_",
        type=float,
        help="published OBProxSG l1 weight: no effect, as in the published train.py with another optimizer "
        "(prune with prune.py)",
    )
    g.add_argument("--Np", type=int, help="published OBProxSG proximal epochs: as --lambda_")

    g = p.add_argument_group("run control and outputs")
    _option(g, "--uid", dest="run.uid", help="run name under --out_root (default: the variant name)")
    _option(g, "--out_root", dest="run.out_root", default=RUN.out_root, metavar="DIR", help="folder of the runs")
    _option(
        g,
        "--out_dir",
        dest="run.out_dir",
        metavar="DIR",
        help="the run folder itself (AdaCoF-pytorch), instead of --uid",
    )
    g.add_argument("--force", action="store_true", help="start afresh in an existing run folder")
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="continue from PATH or the run's checkpoints/last.pth (fresh start if none) with its saved args.json",
    )
    _option(
        g,
        "--steps_per_checkpoint",
        dest="run.steps_per_checkpoint",
        type=int,
        default=RUN.steps_per_checkpoint,
        metavar="N",
        help="save last.pth every N steps",
    )
    _option(g, "--max_steps", dest="run.max_steps", type=int, metavar="N", help="stop after this many steps in total")
    _option(
        g,
        "--max_minutes",
        dest="run.max_minutes",
        type=float,
        metavar="M",
        help="stop after M minutes of this invocation",
    )
    _option(
        g,
        "--log_every",
        dest="run.log_every",
        type=int,
        default=RUN.log_every,
        metavar="N",
        help="log line every N steps",
    )
    _option(g, "--quiet", dest="run.quiet", action="store_true", help="no progress bars")
    _option(
        g,
        "--published_loop",
        dest="run.published_loop",
        action="store_true",
        help="the published epoch loop: evaluate the untrained model first (the best to beat), train --epochs - 1 "
        "epochs, save checkpoints/model_epoch_NNN.pth on every strict Middlebury improvement",
    )
    g.add_argument(
        "--inactive", action="store_true", help="published: parse without creating the run folder; see --print_config"
    )

    g = p.add_argument_group("evaluation while training")
    _option(
        g,
        "--data_root",
        dest="evaluation.data_root",
        metavar="DIR",
        help="root of the evaluation sets (default: $CDFI_DATA_ROOT or test_data/)",
    )
    _option(
        g,
        "--test_input",
        dest="evaluation.test_input",
        metavar="DIR",
        help="Middlebury inputs (default: <data_root>/middlebury_others/input)",
    )
    _option(
        g,
        "--test_gt",
        "--gt",
        dest="evaluation.test_gt",
        metavar="DIR",
        help="Middlebury ground truth (default: <data_root>/middlebury_others/gt; --gt: AdaCoF-pytorch's name)",
    )
    _option(
        g,
        "--test_every",
        dest="evaluation.test_every",
        type=int,
        default=EVAL.test_every,
        metavar="N",
        help="Middlebury every N epochs (0: never)",
    )
    _option(
        g,
        "--val_dir",
        dest="evaluation.val_dir",
        metavar="DIR",
        help="triplet folder whose tri_testlist.txt is a held-out validation split",
    )
    _option(
        g,
        "--val_every",
        dest="evaluation.val_every",
        type=int,
        default=EVAL.val_every,
        metavar="N",
        help="validate every N steps",
    )
    _option(
        g,
        "--val_limit",
        dest="evaluation.val_limit",
        type=int,
        metavar="N",
        help="at most N validation triplets (evenly spaced)",
    )

    g = p.add_argument_group("runtime")
    add_runtime_arguments(p, precision_default="fp32", group=g)
    _option(
        g,
        "--use_cudnn",
        dest="run.use_cudnn",
        type=_bool,
        nargs="?",
        const=True,
        default=RUN.use_cudnn,
        metavar="BOOL",
        help="torch.backends.cudnn.benchmark (published)",
    )

    g = p.add_argument_group(
        "experimental (small-budget ablations without a lasting gain; results in docs/training.md)"
    )
    _option(
        g,
        "--synthetic",
        dest="experimental.synthetic",
        type=float,
        default=EXP.synthetic,
        metavar="P",
        help="fraction of synthetic-motion triplets (a faster start from scratch)",
    )
    _option(
        g,
        "--synthetic_shift",
        dest="experimental.synthetic_shift",
        type=float,
        default=EXP.synthetic_shift,
        metavar="PX",
        help="their largest shift",
    )
    _option(
        g,
        "--blur_warp",
        dest="experimental.blur_warp",
        type=float,
        default=EXP.blur_warp,
        metavar="W",
        help="weight of the Warp term on blurred frames (a faster start from scratch)",
    )
    _option(
        g,
        "--blur_sigmas",
        dest="experimental.blur_sigmas",
        type=_floats,
        default=",".join(f"{s:g}" for s in EXP.blur_sigmas),
        metavar="S,S",
        help="blur sigmas of --blur_warp in px",
    )
    _option(
        g,
        "--grad_clip",
        dest="experimental.grad_clip",
        type=float,
        metavar="NORM",
        help="clip the gradient norm (default off)",
    )
    for name in REMOVED_FLAGS:
        p.add_argument(f"--{name}", action=_Removed, nargs="?", help=SUPPRESS)
    p.add_argument("--amp", action=_Amp, nargs=0, help=SUPPRESS)
    return p


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The configuration options given on the command line, as a document (``{"data": {"crop": 128}}``)."""
    doc: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            group, name = key.split(".", 1)
            doc.setdefault(group, {})[name] = value
    return doc


def work(args: argparse.Namespace, argv: list[str]) -> int:
    """Resolve the configuration, then train it (or print it)."""
    if args.inactive:
        raise UsageError("--inactive: train.py always writes its run folder; --print_config shows the configuration")
    config = invocation_config(overrides(args), args.recipe, args.config, args.resume)
    if (args.lambda_ is not None or args.Np is not None) and not args.print_config:
        print(
            "note: --lambda_/--Np only act with OBProxSG, which train.py does not train with (prune.py does)",
            file=sys.stderr,
        )
    if args.print_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    runtime = resolve_runtime(args, distributed=True)
    return train(config, runtime, args.resume, args.force, "train.py " + shlex.join(argv))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 bad input, 1 failure, 3 NaN loss, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (already reported in one line)
        return int(exc.code or 0)
    return run_cli(
        work,
        args,
        argv,
        prog="train",
        status=int,
        on_interrupt="interrupted: continue with --resume (checkpoints/last.pth is the last saved step)",
    )


if __name__ == "__main__":
    sys.exit(main())
