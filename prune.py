"""Prune a trained model with OBProxSG (CDFI's compression stage) and save the sparse checkpoint.

Fine-tunes any ``make_model`` network from its checkpoint on Vimeo-90K-layout triplets with the l1
penalty ``lambda_ * ||w||_1`` minimised by OBProxSG, using the training loop of ``train.py``
(``cdfi.compression.pruning.prune`` over ``cdfi.training.trainer.Trainer``: resumable, mixed precision,
progress bar). The model density is printed after every epoch. Then run ``sparsity_report.py`` and
``compress.py`` on the result. The published script with its flags is ``extended_version/pruning.py``.

Example (the extended CDFI recipe: 1000 samples, lr 1e-2, lambda 1e-4, Np 10):
    python prune.py --checkpoint checkpoints/adacof_F_5_D_1.pth --train_dir /data/vimeo_triplet \\
        --num_training_samples 1000 --lr 1e-2 --lambda_ 1e-4 --Np 10 --epochs 20 --out pruned.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdfi.cli import EXIT_OK, run_cli
from cdfi.compression.pruning import ADACOF_LOSS, CDFI_LOSS, PruneConfig, PruneResult, prune, state_path_for
from cdfi.runtime import Runtime, add_runtime_arguments, resolve_runtime


def parse_no(text: str) -> int | str:
    """``--No``: an integer number of orthant epochs per cycle, or ``inf``."""
    if text.strip().lower() == "inf":
        return "inf"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--No must be an integer or 'inf', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``prune.py``."""
    p = argparse.ArgumentParser(description="Prune a trained model with OBProxSG and save the sparse checkpoint.")
    p.add_argument("--checkpoint", required=True, help="trained checkpoint of any make_model network")
    p.add_argument("--train_dir", required=True, help="Vimeo-90K triplet folder (tri_trainlist.txt, sequences/)")
    p.add_argument(
        "--out", default=None, help="sparse checkpoint to write (default: model_weights/<checkpoint name>_pruned.pth)"
    )
    p.add_argument(
        "--num_training_samples",
        type=int,
        default=None,
        help="use a seeded random subset of this many triplets (CDFI's extended version: 1000)",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs of fine-tuning (default 10)")
    p.add_argument("--batch_size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--crop", type=int, default=None, help="random square crop (default: full frames)")
    p.add_argument("--lr", type=float, default=1e-2, help="OBProxSG step size (default 1e-2)")
    p.add_argument("--lambda_", type=float, default=1e-4, help="l1 weight (default 1e-4)")
    p.add_argument("--Np", type=int, default=2, help="epochs of proximal steps per cycle (CDFI: 2)")
    p.add_argument("--No", type=parse_no, default="inf", help="epochs of orthant steps per cycle, or inf (default inf)")
    p.add_argument(
        "--eps",
        type=float,
        default=1e-4,
        help="orthant trimming threshold (default 1e-4, the paper's; the published extended_version/pruning.py "
        "passes none, so OBProxSG's 0 applies there, as in extended_version/pruning.py here)",
    )
    p.add_argument(
        "--decay_type",
        default="none",
        help="per-epoch step size schedule: none (default), step (StepLR every --lr_decay epochs), step_E1_E2...",
    )
    p.add_argument("--lr_decay", type=int, default=20, help="epochs per step of --decay_type step (default 20)")
    p.add_argument("--gamma", type=float, default=0.5, help="step size factor of each decay step (default 0.5)")
    p.add_argument(
        "--loss", default=None, help=f"loss string (default: {ADACOF_LOSS} for the AdaCoF family, {CDFI_LOSS} for CDFI)"
    )
    p.add_argument("--vgg_weights", default=None, help="VGG16 weights when the loss has a VGG term")
    add_runtime_arguments(p, precision_default="fp32")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, order and crops (default 0)")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (for smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last.pth")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The library configuration for the parsed flags."""
    ckpt_path = Path(args.checkpoint)
    out = Path(args.out) if args.out else Path("model_weights") / f"{ckpt_path.stem}_pruned.pth"
    return PruneConfig(
        checkpoint=ckpt_path,
        train_dir=Path(args.train_dir),
        out=out,
        num_training_samples=args.num_training_samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        lambda_=args.lambda_,
        Np=args.Np,
        No=args.No,
        eps=args.eps,
        decay_type=args.decay_type,
        lr_decay=args.lr_decay,
        gamma=args.gamma,
        loss=args.loss,
        vgg_weights=args.vgg_weights,
        workers=args.workers,
        seed=args.seed,
        max_steps=args.max_steps,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
    )


def _run(args: argparse.Namespace) -> PruneResult:
    config = config_from_args(args)
    config.check()  # bad values are refused before the runtime is set up
    runtime: Runtime = resolve_runtime(args)
    return prune(config, runtime)


def _wrote(result: PruneResult) -> int:
    print(
        f"wrote {result.out} (density {result.density:.4f}, stopped: {result.reason}); next: "
        f"python sparsity_report.py --checkpoint {result.out}",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the pruning; returns the exit status (2: bad flags or input, 1: failure, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    last = state_path_for(config_from_args(args))
    return run_cli(
        _run,
        args,
        status=_wrote,
        on_interrupt=f"interrupted; {last} holds the last saved state: rerun with --resume to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
