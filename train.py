"""Train a CDFI / AdaCoF model with the published recipe; resumable, distributed, mixed precision.

    python train.py --data_dir db/vimeo_triplet                       # published recipe (CDFI F11/D2)
    python train.py --data_dir db/offline --model compressed_adacof --crop 128 --precision bf16 \\
        --max_minutes 30 --resume                                       # one chunk of a long run
    torchrun --nproc_per_node 4 train.py --data_dir db/vimeo_triplet  # DDP (gloo on CPU, NCCL on GPU)

Defaults are the published recipe: batch 8, Adamax lr 1e-3, StepLR every 20 epochs by 0.5, 100
epochs, loss ``1*Charb+0.01*g_Spatial+0.005*VGG`` for CDFI (``1*Charb+0.01*g_Spatial+0.005*g_Occlusion``
for the AdaCoF family), full frames, hflip/vflip/temporal swap, Middlebury PSNR/SSIM after every epoch
with the best kept. ``--batch_size`` is the global batch: under torchrun
every process takes batch_size / world_size.

Outputs in ``model_weights/<uid>/`` (``--uid`` defaults to the variant name, e.g.
``cdfi_adacof_F_11_D_2``, so the same command line resumes with ``--resume``): ``args.json``,
``log.txt``, ``loss.csv`` (per step), ``eval.csv`` (per epoch Middlebury PSNR/SSIM), ``val.csv``
(``--val_dir``: PSNR on a held-out split every ``--val_every`` steps, beside the overlay and
DIS-flow baselines), ``curves.png``, ``checkpoints/last.pth`` (everything needed to resume) and
``checkpoints/best.pth`` (published format plus metadata; best Middlebury PSNR, else best validation
PSNR, else the latest epoch).

Small budgets (issue 11): ``--recipe small`` changes the defaults to true bilinear sampling, He init,
the ``Warp`` loss term, 128x128 motion-aware crops and a constant learning rate, which leave the frame
average within minutes on a CPU (docs/small_budget_training.md). The single options, all off by
default: ``--sampling floor``, ``--init he``, a ``Warp`` term in ``--loss``, ``--offset_init``,
``--motion_crop``, ``--flow_warmstart``, ``--flow_distill``, ``--blur_warp``, ``--weight_temperature``, ``--head_lr``,
``--synthetic``, ``--color_augment``, ``--scale_augment``.
CDFI on a small budget starts best from a trained compressed AdaCoF: ``--grow_from CKPT`` copies it in
(``cdfi/training/grow.py``) and a ``Context`` term in ``--loss`` trains the GridNet's own synthesis.

This file is the command line only: ``cdfi.training.setup`` turns it into a ``Trainer`` (``cdfi.training.trainer``),
``cdfi.training.monitor`` evaluates and keeps the best checkpoint while it trains, ``cdfi.training.run_log`` writes the
logs and curves.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from cdfi.training.losses import DEFAULT_LOSSES
from cdfi.training.monitor import TrainingMonitor
from cdfi.training.run_log import RunLog
from cdfi.training.setup import RECIPES, setup_run
from cdfi.training.trainer import INITS, OPTIMIZERS, NonFiniteLossError
from models import list_models


def build_parser() -> argparse.ArgumentParser:
    """Every flag of train.py, grouped as in ``--help``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="cdfi_adacof", choices=list_models(), help="model family (default cdfi_adacof)")
    g.add_argument("--kernel_size", type=int, help="kernel size F (default: the family's published F)")
    g.add_argument("--dilation", type=int, help="dilation D (default: the family's published D)")
    g.add_argument("--arch", help="JSON architecture spec (e.g. from compress.py) instead of the published widths")
    g.add_argument(
        "--sampling",
        choices=("trunc", "floor"),
        help="warp sampling rule: trunc = published (default), floor = true bilinear (--recipe small)",
    )
    g.add_argument("--legacy_grad", action="store_true", help="the published warp backward pass (exact replication)")
    g.add_argument("--init_from", help="start from the weights of this checkpoint (not its optimizer state)")
    g.add_argument(
        "--grow_from",
        metavar="CKPT",
        help="start from a trained AdaCoF-family checkpoint of other widths or F/D (e.g. compressed F5/D1 into\n"
        "CDFI F11/D2): its network is copied in so the AdaCoF output starts as its output (cdfi/training/grow.py)",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", default="db/vimeo_triplet", help="Vimeo-90K-layout triplet folder")
    g.add_argument(
        "--crop", type=int, help="random square crop of this size (default: full frames, published; 128 --recipe small)"
    )
    g.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    g.add_argument("--no_augment", action="store_true", help="switch off the flips and the temporal swap")
    g = p.add_argument_group("optimisation (published recipe by default)")
    g.add_argument("--batch_size", type=int, default=8, help="global batch size (default 8)")
    g.add_argument("--epochs", type=int, default=100, help="(default 100)")
    g.add_argument("--lr", type=float, default=1e-3, help="(default 1e-3)")
    g.add_argument("--lr_decay", type=int, default=20, help="StepLR period in epochs (default 20)")
    g.add_argument("--gamma", type=float, default=0.5, help="lr decay factor (default 0.5)")
    g.add_argument("--decay_type", help="step (default), step_E1_E2... or none (--recipe small)")
    g.add_argument("--optimizer", default="ADAMax", choices=OPTIMIZERS, help="(default ADAMax)")
    g.add_argument(
        "--warmup_steps",
        type=int,
        default=0,
        help="raise the lr linearly over the first N steps of a run (fine-tunes with --init_from; default 0)",
    )
    g.add_argument("--weight_decay", type=float, default=0.0, help="(default 0)")
    g.add_argument(
        "--loss",
        help=f"loss string (default: the family's published loss, {DEFAULT_LOSSES['cdfi_adacof']} for CDFI, "
        f"{DEFAULT_LOSSES['adacof']} for the AdaCoF family; --recipe small: see docs/small_budget_training.md)",
    )
    g.add_argument("--vgg_weights", help="ImageNet VGG16 weights (torchvision file) for the VGG loss term")
    g.add_argument("--grad_clip", type=float, help="clip the gradient norm to this value (default off)")
    g.add_argument("--seed", type=int, default=1, help="(default 1)")
    g = p.add_argument_group("precision and devices")
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="fp32 (default), bf16 (CPU with native bf16, or GPU), fp16 (GPU, with loss scaling)",
    )
    g.add_argument("--amp", action="store_true", help="mixed precision: fp16 on a GPU, bf16 on a CPU")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: cuda if available)")
    g.add_argument(
        "--threads",
        type=int,
        help="CPU threads per process (default: torch's); 1 is much faster on a machine shared with other jobs",
    )
    g = p.add_argument_group("run control and outputs")
    g.add_argument("--uid", help="run name under --out_root (default: the variant name)")
    g.add_argument("--out_root", default="model_weights", help="(default model_weights)")
    g.add_argument("--force", action="store_true", help="start afresh in an existing run folder")
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="continue from PATH or from the run's checkpoints/last.pth (start fresh if there is none)",
    )
    g.add_argument("--steps_per_checkpoint", type=int, default=500, help="save last.pth every N steps (default 500)")
    g.add_argument("--max_steps", type=int, help="stop after this many steps in total")
    g.add_argument("--max_minutes", type=float, help="stop after this many minutes of this invocation")
    g.add_argument("--log_every", type=int, default=20, help="log line every N steps (default 20)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("evaluation")
    g.add_argument("--data_root", help="root of the evaluation sets (default: $CDFI_DATA_ROOT or test_data/)")
    g.add_argument("--test_input", help="Middlebury input folder (default: <data_root>/middlebury_others/input)")
    g.add_argument("--test_gt", help="Middlebury ground-truth folder (default: <data_root>/middlebury_others/gt)")
    g.add_argument("--test_every", type=int, default=1, help="evaluate on Middlebury every N epochs (0: never)")
    g.add_argument("--val_dir", help="triplet folder whose tri_testlist.txt is a held-out validation split")
    g.add_argument("--val_every", type=int, default=200, help="validate every N steps (default 200)")
    g.add_argument("--val_limit", type=int, help="use at most N validation triplets (evenly spaced)")
    g = p.add_argument_group("small-budget training (issue 11; defaults keep the published recipe)")
    g.add_argument(
        "--recipe",
        default="published",
        choices=RECIPES,
        help="defaults of the flags marked '--recipe small': published (default) or small (learns motion within "
        "minutes on a CPU; flags given explicitly still win)",
    )
    g.add_argument(
        "--init",
        choices=INITS,
        help="weight init of a fresh start: published (PyTorch default, default) or he (He/Kaiming normal; "
        "--recipe small)",
    )
    g.add_argument("--offset_init", type=float, default=0.0, help="start offsets at +-X px, off the integer kink")
    g.add_argument(
        "--motion_crop",
        type=float,
        help="probability of taking the crop with the most motion among --motion_candidates (default 0; 0.5 "
        "--recipe small)",
    )
    g.add_argument("--motion_candidates", type=int, default=8, help="(default 8)")
    g.add_argument(
        "--flow_warmstart",
        type=int,
        default=0,
        metavar="STEPS",
        help="first STEPS steps add L1(offsets, -+DIS flow/2) (needs OpenCV)",
    )
    g.add_argument("--flow_warmstart_weight", type=float, default=1.0, help="(default 1)")
    g.add_argument(
        "--flow_distill",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="whole run: add WEIGHT x end-point error between each kernel set's mean sample position and -+DIS "
        "flow/2 (needs OpenCV; default 0)",
    )
    g.add_argument(
        "--blur_warp",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="whole run: add WEIGHT x the Warp term on Gaussian-blurred frames (--blur_sigmas), which reaches "
        "motions a few pixels beyond where the kernels sample (default 0)",
    )
    g.add_argument("--blur_sigmas", default="2,4,8", help="blur sigmas in pixels for --blur_warp (default 2,4,8)")
    g.add_argument(
        "--blend_bias",
        type=float,
        help="CDFI: start the Blend head's output bias here (-4: the output starts as the AdaCoF blend, ~2%% GridNet)",
    )
    g.add_argument("--weight_temperature", type=float, default=1.0, help="softmax temperature of the Weight heads")
    g.add_argument("--head_lr", help="per-head lr multipliers, e.g. Alpha=2,Beta=2,Weight=0.5")
    g.add_argument("--synthetic", type=float, default=0.0, help="fraction of synthetic-motion triplets")
    g.add_argument("--synthetic_shift", type=float, default=4.0, help="their largest shift in px (default 4)")
    g.add_argument(
        "--color_augment",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of one random channel order and desaturation per triplet (default 0)",
    )
    g.add_argument(
        "--scale_augment",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of resizing a triplet (motion and texture alike) by a factor from --scale_range before "
        "cropping (default 0)",
    )
    g.add_argument(
        "--scale_range",
        default="0.5,1",
        metavar="LO,HI",
        help="resize factors for --scale_augment, drawn log-uniformly (default 0.5,1)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Train as the parsed command line says; returns the exit status (3: the loss became NaN/inf)."""
    setup = setup_run(args)
    trainer = setup.trainer
    with contextlib.ExitStack() as stack:
        stack.callback(setup.close)
        if setup.resume_path is not None:
            trainer.resume(setup.resume_path)
        log = None
        if setup.is_main:
            keep = trainer.step if setup.resume_path is not None else None
            log = stack.enter_context(RunLog(setup.run_dir, [t.name for t in setup.criterion.terms], keep))
            if setup.resume_path is not None:
                log.line(f"resumed from {setup.resume_path} at epoch {trainer.epoch}, step {trainer.step}")
            else:
                log.line(f"start: {' '.join(sys.argv)}")
        monitor = TrainingMonitor(
            trainer,
            log,
            setup.checkpoint_dir / "best.pth",
            middlebury=setup.middlebury,
            validation=setup.validation,
            log_every=args.log_every,
            val_every=args.val_every,
            test_every=args.test_every,
            progress=not args.quiet,
        )
        monitor.attach()
        try:
            result = trainer.fit(args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes)
        except NonFiniteLossError as exc:
            if log is not None:
                log.line(f"stopped: {exc}")
            print(f"train: error: {exc}", file=sys.stderr)
            return 3
        if log is not None:
            log.plot()
            message = {
                "done": f"finished {result.epoch} epochs ({result.step} steps)",
                "max_steps": f"stopped at --max_steps after step {result.step}; continue with --resume",
                "max_minutes": f"stopped after {args.max_minutes} minutes at step {result.step}; "
                "continue with --resume",
            }[result.reason]
            log.line(message)
            print(f"{setup.run_dir}: {message}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError, ImportError, NotImplementedError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
