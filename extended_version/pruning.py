"""The published ``extended_version/pruning.py``: OBProxSG pruning of a trained model, with its flags.

Run from this folder, as the published README does (paths relative to it)::

    python pruning.py --model adacof --kernel_size 5 --dilation 1 \\
        --checkpoint ../checkpoints/adacof_F_5_D_1.pth --optimizer OBProxSG --Np 10 --lr 1e-2 \\
        --lambda_ 1e-4 --data_dir path/to/vimeo_triplet --num_training_samples 1000 \\
        --test_input ../test_data/middlebury_others/input/ --test_gt ../test_data/middlebury_others/gt/ \\
        --gpu_id 0 --uid adacof_pruned_lr_1e-2_lam_1e-4_Np_10 --force

A mapping of the published flags onto ``cdfi.compression.pruning.prune`` (what ``prune.py`` runs) with
the published run folder (``cdfi.compression.extended.PublishedRun``): ``model_weights/<uid>/``
holds ``args.txt``, ``log.txt``, ``results/<seq>/<NNN>.png`` (the Middlebury test before training and
after each epoch), ``checkpoints/real_time.pth`` and ``checkpoints/model_epoch_<NNN>.pth`` (best PSNR so
far), and here also ``<uid>.pth``, the pruned model at the end (the published README's next command
reads it as ``../checkpoints/<uid>.pth``). As published: OBProxSG gets no ``eps`` (so 0, where
``prune.py`` defaults to the paper's 1e-4), its epoch is ``num_training_samples / batch_size`` steps,
its step size follows ``--decay_type``/``--lr_decay``/``--gamma``, and ``--epochs E`` trains E-1
epochs. See README.md here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from cdfi.cli import EXIT_OK, UsageError, run_cli
from cdfi.compression.extended import (
    PublishedRun,
    RunFolder,
    add_published_flags,
    middlebury_test_items,
)
from cdfi.compression.pruning import PruneConfig, PruneResult, prune
from cdfi.runtime import resolve_runtime
from cdfi.training.losses import PUBLISHED_LOSS, drop_term
from lpips_pytorch import build_lpips
from models import list_models

PUBLISHED_EPS = 0.0  # the published make_optimizer passes no eps to OBProxSG, whose default is 0
LOSS_WITHOUT_VGG = drop_term(PUBLISHED_LOSS, "VGG")  # the published default loss less its VGG term


def build_parser() -> argparse.ArgumentParser:
    """Every flag of the published script (those of the published train.py) plus the runtime flags."""
    p = argparse.ArgumentParser(description="Prune a trained model with OBProxSG (the published extended version).")
    add_published_flags(p, runtime=True)
    return p


def check_published_values(args: argparse.Namespace) -> None:
    """Refuse, in one line naming the flag, a published value this face cannot honour."""
    if args.model not in list_models():
        raise UsageError(f"--model {args.model}: no such model here; use one of {', '.join(list_models())}")
    if args.optimizer != "OBProxSG":
        raise UsageError(
            f"--optimizer {args.optimizer}: pruning.py prunes with OBProxSG only; pass --optimizer OBProxSG "
            f"(train.py fine-tunes with {args.optimizer})"
        )
    if args.checkpoint is None:
        raise UsageError("--checkpoint: give the trained model to prune (e.g. ../checkpoints/adacof_F_5_D_1.pth)")
    if args.inactive:
        raise UsageError("--inactive: pruning needs its run folder model_weights/<uid>; drop --inactive")
    if args.epochs < 2:
        raise UsageError(f"--epochs {args.epochs}: the published loop trains E-1 epochs; give at least 2")
    if not Path(args.data_dir).is_dir():
        raise UsageError(
            f"--data_dir {args.data_dir}: Vimeo-90K triplet folder not found (it holds tri_trainlist.txt "
            "and sequences/)"
        )
    if args.weight_decay:
        print(f"note: --weight_decay {args.weight_decay}: OBProxSG takes none, as published; ignored", file=sys.stderr)


def config_from_args(args: argparse.Namespace, folder: RunFolder) -> PruneConfig:
    """The library configuration for the published flags (published meanings; see the module docstring)."""
    return PruneConfig(
        checkpoint=Path(args.checkpoint),
        train_dir=Path(args.data_dir),
        out=folder.root / f"{folder.uid}.pth",
        model=args.model,
        kernel_size=args.kernel_size,
        dilation=args.dilation,
        num_training_samples=args.num_training_samples if args.num_training_samples > 0 else None,
        samples_at_most=True,
        epochs=args.epochs - 1,
        batch_size=args.batch_size,
        drop_last=False,
        lr=args.lr,
        lambda_=args.lambda_,
        Np=args.Np,
        eps=PUBLISHED_EPS,
        decay_type=args.decay_type,
        lr_decay=args.lr_decay,
        gamma=args.gamma,
        loss=args.loss or PUBLISHED_LOSS,
        loss_fallback=None if args.loss else LOSS_WITHOUT_VGG,
        force=args.force,
        progress=False,
        state_path=folder.root / "checkpoints" / "real_time.pth",
        steps_per_checkpoint=100,
        data_flag="--data_dir",
    )


def _run(args: argparse.Namespace) -> PruneResult:
    check_published_values(args)
    folder = RunFolder.for_uid(args.uid, args.force)
    items = middlebury_test_items(args.test_input, args.test_gt)
    config = config_from_args(args, folder)
    config.check()
    runtime = resolve_runtime(args)
    torch.backends.cudnn.benchmark = bool(args.use_cudnn)
    lpips_model = build_lpips("squeeze")
    if lpips_model is not None:
        lpips_model = lpips_model.to(runtime.device)
    run_args = argparse.Namespace(
        **vars(args), save_path=str(folder.root), log=str(folder.log_path), arg=str(folder.root / "args.txt")
    )
    run = PublishedRun(folder, str(run_args), items, runtime, args.epochs, lpips_model=lpips_model)
    return prune(config, runtime, run)


def _wrote(result: PruneResult) -> int:
    print(
        f"wrote {result.out} (density {result.density:.7f}); the published README's next step reads "
        f"../checkpoints/{result.out.name}: cp {result.out} ../checkpoints/",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Prune as the published script does; returns the exit status (2: bad flags or input)."""
    args = build_parser().parse_args(argv)
    return run_cli(
        _run,
        args,
        status=_wrote,
        on_interrupt="interrupted; model_weights/<uid>/checkpoints/real_time.pth holds the last saved state",
    )


if __name__ == "__main__":
    sys.exit(main())
