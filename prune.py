"""Prune a trained model with OBProxSG (CDFI's compression stage) and save the sparse checkpoint.

Fine-tunes any ``make_model`` network from its checkpoint on Vimeo-90K-layout triplets with the l1
penalty ``lambda_ * ||w||_1`` minimised by OBProxSG, using the training loop of ``train.py``
(``cdfi.training.trainer.Trainer``: resumable, mixed precision, progress bar). The model density is printed
after every epoch. Then run ``sparsity_report.py`` and ``compress.py`` on the result.

Example (the extended CDFI recipe: 1000 samples, lr 1e-2, lambda 1e-4, Np 10):
    python prune.py --checkpoint checkpoints/adacof_F_5_D_1.pth --train_dir /data/vimeo_triplet \\
        --num_training_samples 1000 --lr 1e-2 --lambda_ 1e-4 --Np 10 --epochs 20 --out pruned.pth
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cdfi.compression.core import conv_densities, model_density
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import load_model, save_checkpoint
from cdfi.runtime.precision import resolve_precision
from cdfi.training.losses import DEFAULT_LOSSES, CompositeLoss
from cdfi.training.trainer import ResumableSampler, Trainer
from datasets.vimeo import VimeoTriplets
from optimizers import OBProxSG

ADACOF_LOSS = DEFAULT_LOSSES["adacof"]
CDFI_LOSS = "1*Charb+0.01*g_Spatial"


class SampleSubset(Dataset):
    """A fixed subset of a data set that still forwards ``set_epoch`` (for epoch-dependent augmentation)."""

    def __init__(self, dataset: Any, count: int | None, seed: int) -> None:
        n = len(dataset)
        if count is not None and not 1 <= count <= n:
            raise ValueError(f"--num_training_samples must be between 1 and {n} (the training set size), got {count}")
        if count is None or count == n:
            self.indices = list(range(n))
        else:
            rng = np.random.default_rng(seed)
            self.indices = sorted(int(i) for i in rng.choice(n, size=count, replace=False))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def parse_no(text: str) -> int | str:
    """``--No``: an integer number of orthant epochs per cycle, or ``inf``."""
    if text.strip().lower() == "inf":
        return "inf"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--No must be an integer or 'inf', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--epochs", type=int, default=10, help="epochs of fine-tuning")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--crop", type=int, default=None, help="random square crop (default: full frames)")
    p.add_argument("--lr", type=float, default=1e-2, help="OBProxSG step size")
    p.add_argument("--lambda_", type=float, default=1e-4, help="l1 weight")
    p.add_argument("--Np", type=int, default=2, help="epochs of proximal steps per cycle (CDFI: 2)")
    p.add_argument("--No", type=parse_no, default="inf", help="epochs of orthant steps per cycle, or inf")
    p.add_argument("--eps", type=float, default=1e-4, help="orthant trimming threshold (CDFI: 1e-4)")
    p.add_argument(
        "--loss", default=None, help=f"loss string (default: {ADACOF_LOSS} for the AdaCoF family, {CDFI_LOSS} for CDFI)"
    )
    p.add_argument("--vgg_weights", default=None, help="VGG16 weights when the loss has a VGG term")
    p.add_argument("--gpu_id", type=int, default=0)
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (autocast)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (for smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.last.pth")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--no_progress", action="store_true")
    return p


def _device(gpu_id: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if not 0 <= gpu_id < torch.cuda.device_count():
        raise ValueError(f"--gpu_id {gpu_id}: only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device("cuda", gpu_id)


def density_line(trainer: Trainer) -> str:
    """``epoch E  phase P  density D  (conv weights C)`` for the model being pruned."""
    model = trainer.model
    layers = conv_densities(model.state_dict())
    conv = sum(d.nonzero for d in layers) / sum(d.total for d in layers)
    phase = getattr(trainer.optimizer, "phase", "?")
    return (
        f"epoch {trainer.epoch}  next phase {phase}  model density {model_density(model):.4f}  conv weights {conv:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the pruning; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        ckpt_path = Path(args.checkpoint)
        out = Path(args.out) if args.out else Path("model_weights") / f"{ckpt_path.stem}_pruned.pth"
        last = out.with_name(f"{out.stem}.last{out.suffix}")
        if not (args.resume and last.is_file()):
            ensure_writable(out, args.force)
        for name in ("epochs", "batch_size", "max_steps"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
        for name in ("lr", "lambda_"):
            value = getattr(args, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} must be a positive number, got {value}")
        device = _device(args.gpu_id)
        precision = resolve_precision(args.precision, device)
        model = load_model(ckpt_path, map_location="cpu").to(device)
        loss_spec = args.loss or (CDFI_LOSS if model.model_name == "cdfi_adacof" else ADACOF_LOSS)
        loss_fn = CompositeLoss(loss_spec, vgg_weights=args.vgg_weights).to(device)
        data = SampleSubset(
            VimeoTriplets(args.train_dir, "train", crop=args.crop, seed=args.seed), args.num_training_samples, args.seed
        )
        sampler = ResumableSampler(data, shuffle=True, seed=args.seed, drop_last=False)
        loader = DataLoader(
            data,
            batch_size=args.batch_size,
            sampler=sampler,
            num_workers=args.workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        if len(loader) == 0:
            raise ValueError(f"{len(data)} training samples make no batch of {args.batch_size}; lower --batch_size")
        optimizer = OBProxSG(
            model.parameters(),
            lr=args.lr,
            lambda_=args.lambda_,
            epochSize=len(loader),
            Np=args.Np,
            No=args.No,
            eps=args.eps,
        )
        history: list[dict[str, float]] = []

        def on_epoch_end(trainer: Trainer) -> None:
            history.append({"epoch": trainer.epoch, "density": model_density(trainer.model)})
            trainer.extra_state["density_history"] = list(history)
            print(density_line(trainer), flush=True)

        trainer = Trainer(
            model,
            optimizer,
            loader,
            loss_fn,
            device=device,
            precision=precision,
            checkpoint_path=last,
            on_epoch_end=on_epoch_end,
            progress=not args.no_progress,
        )
        if args.resume and trainer.resume():
            history[:] = trainer.extra_state.get("density_history", [])
            print(f"resumed from {last} at epoch {trainer.epoch}, step {trainer.step}", file=sys.stderr)
        print(
            f"pruning {model.model_name} F{model.kernel_size}/D{model.dilation} on {len(data)} samples, "
            f"{len(loader)} steps/epoch; start density {model_density(model):.4f}",
            flush=True,
        )
        result = trainer.fit(args.epochs, max_steps=args.max_steps)
        save_checkpoint(
            out,
            model,
            trainer.epoch,
            extra={
                "density": model_density(model),
                "pruning": {"lr": args.lr, "lambda_": args.lambda_, "Np": args.Np, "No": args.No, "eps": args.eps},
            },
            force=True,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out} (density {model_density(model):.4f}, stopped: {result.reason}); next: "
        f"python sparsity_report.py --checkpoint {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
