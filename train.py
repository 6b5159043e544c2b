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

Small-budget options (issue 11, all off by default): ``--sampling floor``, ``--offset_init``,
``--motion_crop``, ``--flow_warmstart``, ``--weight_temperature``, ``--head_lr``, ``--synthetic``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from cdfi.baselines import DISFlow, Overlay
from cdfi.checkpoint import checkpoint_variant, load_checkpoint, load_weights, save_checkpoint
from cdfi.evaluation import evaluate_items
from cdfi.fileio import atomic_path, atomic_write_text
from cdfi.losses import DEFAULT_LOSSES, CompositeLoss
from cdfi.paths import resolve_data_root
from cdfi.precision import prepare_model, resolve_precision
from cdfi.training import (
    INITS,
    OPTIMIZERS,
    FlowWarmStart,
    NonFiniteLossError,
    ResumableSampler,
    Trainer,
    build_optimizer,
    build_scheduler,
    format_parts,
    init_he,
    init_offsets,
    init_weight_temperature,
    parameter_groups,
    parse_head_lr,
)
from datasets.benchmark_sets import BenchmarkItem, vimeo_test_items
from datasets.vimeo import VimeoTriplets, read_triplet_list
from models import list_models, make_model, variant_name

# Arguments that fix what a run is; a resumed run must agree on them.
IDENTITY_ARGS = ("model", "kernel_size", "dilation", "sampling")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="cdfi_adacof", choices=list_models(), help="model family (default cdfi_adacof)")
    g.add_argument("--kernel_size", type=int, help="kernel size F (default: the family's published F)")
    g.add_argument("--dilation", type=int, help="dilation D (default: the family's published D)")
    g.add_argument("--arch", help="JSON architecture spec (e.g. from compress.py) instead of the published widths")
    g.add_argument(
        "--sampling",
        default="trunc",
        choices=("trunc", "floor"),
        help="warp sampling rule: trunc = published (default), floor = true bilinear",
    )
    g.add_argument("--legacy_grad", action="store_true", help="the published warp backward pass (exact replication)")
    g.add_argument("--init_from", help="start from the weights of this checkpoint (not its optimizer state)")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", default="db/vimeo_triplet", help="Vimeo-90K-layout triplet folder")
    g.add_argument("--crop", type=int, help="random square crop of this size (default: full frames, published)")
    g.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    g.add_argument("--no_augment", action="store_true", help="switch off the flips and the temporal swap")
    g = p.add_argument_group("optimisation (published recipe by default)")
    g.add_argument("--batch_size", type=int, default=8, help="global batch size (default 8)")
    g.add_argument("--epochs", type=int, default=100, help="(default 100)")
    g.add_argument("--lr", type=float, default=1e-3, help="(default 1e-3)")
    g.add_argument("--lr_decay", type=int, default=20, help="StepLR period in epochs (default 20)")
    g.add_argument("--gamma", type=float, default=0.5, help="lr decay factor (default 0.5)")
    g.add_argument("--decay_type", default="step", help="step (default), step_E1_E2... or none")
    g.add_argument("--optimizer", default="ADAMax", choices=OPTIMIZERS, help="(default ADAMax)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="(default 0)")
    g.add_argument(
        "--loss",
        help=f"loss string (default: the family's published loss, {DEFAULT_LOSSES['cdfi_adacof']} for CDFI, "
        f"{DEFAULT_LOSSES['adacof']} for the AdaCoF family)",
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
        "--init",
        default="published",
        choices=INITS,
        help="weight init of a fresh start: published (PyTorch default, default) or he (He/Kaiming normal)",
    )
    g.add_argument("--offset_init", type=float, default=0.0, help="start offsets at +-X px, off the integer kink")
    g.add_argument(
        "--motion_crop",
        type=float,
        default=0.0,
        help="probability of taking the crop with the most motion among --motion_candidates",
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
    g.add_argument("--weight_temperature", type=float, default=1.0, help="softmax temperature of the Weight heads")
    g.add_argument("--head_lr", help="per-head lr multipliers, e.g. Alpha=2,Beta=2,Weight=0.5")
    g.add_argument("--synthetic", type=float, default=0.0, help="fraction of synthetic-motion triplets")
    g.add_argument("--synthetic_shift", type=float, default=4.0, help="their largest shift in px (default 4)")
    return p


class TrainSetupError(ValueError):
    """A command line that cannot start training."""


# ----------------------------------------------------------------------------------------------- logs


class CsvLog:
    """An append-only CSV; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: Path, fields: list[str], keep_until_step: int | None) -> None:
        self.path = path
        self.fields = fields
        rows: list[dict[str, str]] = []
        if keep_until_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r.get("step") or 0)) <= keep_until_step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)

    def rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(run_dir: Path, loss: CsvLog, evals: CsvLog, val: CsvLog) -> None:
    """``curves.png``: training loss, Middlebury PSNR per epoch, validation PSNR vs steps and minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(rows: list[dict[str, str]], key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    rows = loss.rows()
    ax = axes[0][0]
    if rows:
        steps, values = column(rows, "step"), column(rows, "loss")
        ax.plot(steps, values, lw=0.5, alpha=0.4, label="per step")
        k = max(1, len(values) // 50)
        smooth = [
            sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))
        ]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {k}")
        ax.set_yscale("log")
        ax.legend()
    ax.set(title="training loss", xlabel="step")
    rows = evals.rows()
    ax = axes[0][1]
    if rows:
        ax.plot(column(rows, "epoch"), column(rows, "psnr"), "o-")
    ax.set(title="Middlebury PSNR (dB)", xlabel="epoch")
    rows = val.rows()
    for ax, key, label in ((axes[1][0], "step", "step"), (axes[1][1], "minutes", "wall-clock minutes")):
        if rows:
            x = column(rows, key)
            ax.plot(x, column(rows, "psnr"), "o-", label="model")
            ax.plot(x, column(rows, "overlay"), "--", label="overlay (A+C)/2")
            ax.plot(x, column(rows, "dis_flow"), ":", label="DIS flow")
            ax.legend()
        ax.set(title="validation PSNR (dB)", xlabel=label)
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- setup


def _world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainSetupError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _middlebury_items(args: argparse.Namespace) -> list[BenchmarkItem]:
    """Middlebury items from --test_input/--test_gt (explicit folders must exist; the default may be
    absent, then per-epoch evaluation is skipped with a note)."""
    if args.test_every <= 0:
        return []
    root = resolve_data_root(args.data_root) / "middlebury_others"
    inp = Path(args.test_input) if args.test_input else root / "input"
    gt = Path(args.test_gt) if args.test_gt else root / "gt"
    explicit = bool(args.test_input or args.test_gt)
    if not inp.is_dir() or not gt.is_dir():
        missing = inp if not inp.is_dir() else gt
        if explicit:
            raise TrainSetupError(f"{missing}: Middlebury folder not found (--test_input/--test_gt)")
        print(
            f"note: {missing} not found; no per-epoch Middlebury evaluation (pass --test_input/--test_gt)",
            file=sys.stderr,
        )
        return []
    items = [
        BenchmarkItem(d.name, d / "frame10.png", d / "frame11.png", gt / d.name / "frame10i11.png", "frame10i11.png")
        for d in sorted(inp.iterdir())
        if d.is_dir()
    ]
    if not items:
        raise TrainSetupError(f"{inp}: holds no Middlebury sequence folders")
    return items


def _val_items(args: argparse.Namespace) -> list[BenchmarkItem]:
    if not args.val_dir:
        return []
    read_triplet_list(args.val_dir, "test")  # a missing or empty split is an error before training
    items = vimeo_test_items(args.val_dir)
    if args.val_limit and len(items) > args.val_limit:
        step = len(items) / args.val_limit
        items = [items[int(i * step)] for i in range(args.val_limit)]
    return items


def _check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "epochs", "steps_per_checkpoint", "log_every", "val_every", "motion_candidates"):
        if getattr(args, name) < (0 if name == "steps_per_checkpoint" else 1):
            raise TrainSetupError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.crop is not None and args.crop < 1:
        raise TrainSetupError(f"--crop must be positive, got {args.crop}")
    if args.workers < 0:
        raise TrainSetupError(f"--workers must be >= 0, got {args.workers}")
    if args.flow_warmstart < 0 or args.synthetic_shift <= 0:
        raise TrainSetupError("--flow_warmstart must be >= 0 and --synthetic_shift positive")


def _resolve_resume(args: argparse.Namespace, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (after the --uid/--force checks)."""
    last = run_dir / "checkpoints" / "last.pth"
    if args.resume is not None:
        path = Path(args.resume) if args.resume else last
        if args.resume and not path.is_file():
            raise TrainSetupError(f"--resume {path}: checkpoint not found")
        if path.is_file():
            ckpt = load_checkpoint(path)
            if "optimizer" not in ckpt.meta:
                raise TrainSetupError(f"--resume {path}: not a training checkpoint (use --init_from for weights)")
            have = dict(zip(("model", "kernel_size", "dilation"), checkpoint_variant(ckpt), strict=True))
            have["sampling"] = ckpt.meta.get("sampling", "trunc")
            for key in IDENTITY_ARGS:
                if have[key] != getattr(args, key):
                    raise TrainSetupError(
                        f"--resume {path}: the run has {key}={have[key]!r}, not {getattr(args, key)!r}; "
                        "use the run's settings or a new --uid"
                    )
            return path
        return None
    if run_dir.exists() and any(run_dir.iterdir()) and not args.force:
        raise TrainSetupError(f"{run_dir}: run folder exists (pass --resume to continue or --force to start afresh)")
    return None


# ----------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise TrainSetupError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    world, rank, local_rank = _world()
    device = _device(args.device, local_rank)
    precision = args.precision
    if args.amp and precision == "fp32":
        precision = "fp16" if device.type == "cuda" else "bf16"
    precision = resolve_precision(precision, device)
    if args.batch_size % world:
        raise TrainSetupError(f"--batch_size {args.batch_size} is not divisible by the {world} processes")
    head_lr = parse_head_lr(args.head_lr)
    torch.manual_seed(args.seed)
    model = make_model(
        args.model,
        args.kernel_size,
        args.dilation,
        arch=args.arch,
        sampling=args.sampling,
        legacy_grad=args.legacy_grad,
    )
    args.kernel_size, args.dilation = model.kernel_size, model.dilation
    uid = args.uid or variant_name(args.model, model.kernel_size, model.dilation)
    run_dir = Path(args.out_root) / uid
    resume_path = _resolve_resume(args, run_dir)
    args.loss = args.loss or DEFAULT_LOSSES[args.model]
    criterion = CompositeLoss(args.loss, args.vgg_weights)
    with torch.no_grad():
        probe = model.train()(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    criterion.check_model_outputs(tuple(probe), f"{args.model}")
    dataset = VimeoTriplets(
        args.data_dir,
        "train",
        crop=args.crop,
        augment=not args.no_augment,
        seed=args.seed,
        motion_crop=args.motion_crop,
        motion_candidates=args.motion_candidates,
        synthetic=args.synthetic,
        synthetic_shift=args.synthetic_shift,
        with_flow=args.flow_warmstart > 0,
    )
    per_rank = args.batch_size // world
    if len(dataset) < args.batch_size:
        raise TrainSetupError(
            f"{args.data_dir}: {len(dataset)} training triplets, fewer than one batch of {args.batch_size}"
        )
    mb_items, val_items = _middlebury_items(args), _val_items(args)
    if args.init_from:
        init = load_checkpoint(args.init_from)
        load_weights(model, init)
        trained = str(init.meta.get("sampling", "trunc"))
        if trained != args.sampling:
            note = " (a published checkpoint: results will differ from the paper)" if init.is_published_format else ""
            warnings.warn(
                f"{args.init_from} was trained with sampling={trained!r}, training with {args.sampling!r}{note}",
                stacklevel=1,
            )
    elif resume_path is None:
        if args.init == "he":
            init_he(model, args.seed)
        init_offsets(model, args.offset_init, args.seed)
        if args.weight_temperature != 1.0:
            init_weight_temperature(model, args.weight_temperature)

    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    if is_main:
        if resume_path is None:  # a fresh start (--force): no checkpoint of an earlier run may survive
            for name in ("last.pth", "best.pth"):
                (run_dir / "checkpoints" / name).unlink(missing_ok=True)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        saved = {**vars(args), "uid": uid, "precision": precision, "world_size": world}
        atomic_write_text(run_dir / "args.json", json.dumps(saved, indent=2) + "\n")
    model = prepare_model(model, device, precision)
    criterion = criterion.to(device)
    train_model: torch.nn.Module = model
    if world > 1:
        # The models' only buffers are constants (the RGB mean), so there is nothing to broadcast.
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    optimizer = build_optimizer(
        args.optimizer,
        parameter_groups(model, args.lr, head_lr, args.weight_temperature, args.optimizer),
        args.lr,
        args.weight_decay,
    )
    scheduler = build_scheduler(optimizer, args.decay_type, args.lr_decay, args.gamma)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    warm = FlowWarmStart(model, args.flow_warmstart, args.flow_warmstart_weight) if args.flow_warmstart else None

    log_file = (run_dir / "log.txt").open("a") if is_main else None

    def log(line: str) -> None:
        if log_file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"{stamp} {line}\n")
            log_file.flush()

    trainer = Trainer(
        train_model,
        optimizer,
        loader,
        criterion,
        scheduler=scheduler,
        device=device,
        precision=precision,
        checkpoint_path=run_dir / "checkpoints" / "last.pth",
        steps_per_checkpoint=args.steps_per_checkpoint,
        grad_clip=args.grad_clip,
        extra_loss=warm,
        progress=not args.quiet,
    )
    if resume_path is not None:
        trainer.resume(resume_path)
        log(f"resumed from {resume_path} at epoch {trainer.epoch}, step {trainer.step}")
    else:
        log(f"start: {' '.join(sys.argv)}")
    keep = trainer.step if resume_path is not None else None
    loss_fields = ["step", "epoch", "minutes", "lr", "loss", *[t.name for t in criterion.terms], "extra"]
    loss_log = CsvLog(run_dir / "loss.csv", loss_fields, keep) if is_main else None
    eval_log = CsvLog(run_dir / "eval.csv", ["epoch", "step", "minutes", "psnr", "ssim"], keep) if is_main else None
    val_log = (
        CsvLog(run_dir / "val.csv", ["step", "epoch", "minutes", "cpu_minutes", "psnr", "overlay", "dis_flow"], keep)
        if is_main
        else None
    )
    state = trainer.extra_state
    state.setdefault("minutes", 0.0)
    state.setdefault("cpu_minutes", 0.0)
    base_minutes, base_cpu = state["minutes"], state["cpu_minutes"]
    cpu_start = time.process_time()
    last_plot = [time.monotonic()]

    def clock() -> None:
        state["minutes"] = base_minutes + trainer.minutes()
        state["cpu_minutes"] = base_cpu + (time.process_time() - cpu_start) / 60

    def keep_best(metric: str, value: float) -> None:
        if state.get("best_metric") not in (None, metric):
            return
        if value > state.get("best_value", float("-inf")):
            state.update(best_metric=metric, best_value=value, best_step=trainer.step)
            save_checkpoint(
                run_dir / "checkpoints" / "best.pth", model, trainer.epoch, extra={"step": trainer.step, metric: value}
            )
            log(f"best {metric} {value:.3f} dB at step {trainer.step}: saved best.pth")

    def validate() -> None:
        if not val_items or val_log is None:
            return
        if "val_overlay" not in state:
            state["val_overlay"] = evaluate_items(Overlay(), val_items, None, progress=False, print_rows=False).mean()[
                "psnr"
            ]
            state["val_dis_flow"] = evaluate_items(DISFlow(), val_items, None, progress=False, print_rows=False).mean()[
                "psnr"
            ]
        result = evaluate_items(model, val_items, None, device=device, progress=False, print_rows=False)
        value = result.mean()["psnr"]
        clock()
        val_log.append(
            {
                "step": trainer.step,
                "epoch": trainer.epoch + 1,
                "minutes": f"{state['minutes']:.3f}",
                "cpu_minutes": f"{state['cpu_minutes']:.3f}",
                "psnr": value,
                "overlay": state["val_overlay"],
                "dis_flow": state["val_dis_flow"],
            }
        )
        log(
            f"step {trainer.step}: validation PSNR {value:.3f} dB (overlay {state['val_overlay']:.3f}, "
            f"DIS flow {state['val_dis_flow']:.3f}) on {len(result.rows)} triplets"
        )
        if value is not None and not mb_items:
            keep_best("val_psnr", value)
        if time.monotonic() - last_plot[0] > 120:  # matplotlib costs seconds; the final plot is always made
            plot_curves(run_dir, loss_log, eval_log, val_log)
            last_plot[0] = time.monotonic()

    def on_step(tr: Trainer, parts: dict[str, float]) -> None:
        if not is_main:
            return
        clock()
        loss_log.append(
            {
                "step": tr.step,
                "epoch": tr.epoch + 1,
                "minutes": f"{state['minutes']:.3f}",
                "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_factor", 1.0),
                **parts,
            }
        )
        if tr.step % args.log_every == 0:
            log(f"epoch {tr.epoch + 1} step {tr.step}: {format_parts(parts)}")
        if val_items and tr.step % args.val_every == 0:
            validate()

    def on_epoch_end(tr: Trainer) -> None:
        if not is_main:
            return
        if mb_items and tr.epoch % args.test_every == 0:
            result = evaluate_items(model, mb_items, None, device=device, progress=not args.quiet, print_rows=False)
            mean = result.mean()
            clock()
            eval_log.append(
                {
                    "epoch": tr.epoch,
                    "step": tr.step,
                    "minutes": f"{state['minutes']:.3f}",
                    "psnr": mean["psnr"],
                    "ssim": mean["ssim"],
                }
            )
            log(f"epoch {tr.epoch}: Middlebury PSNR {mean['psnr']:.3f} dB, SSIM {mean['ssim']:.4f}")
            if mean["psnr"] is not None:
                keep_best("middlebury_psnr", mean["psnr"])
        if not mb_items and not val_items:
            save_checkpoint(run_dir / "checkpoints" / "best.pth", model, tr.epoch, extra={"step": tr.step})
        plot_curves(run_dir, loss_log, eval_log, val_log)

    trainer.on_step = on_step
    trainer.on_epoch_end = on_epoch_end
    if is_main and val_items and trainer.step == 0:
        validate()
    try:
        result = trainer.fit(args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes)
    except NonFiniteLossError as exc:
        log(f"stopped: {exc}")
        print(f"train: error: {exc}", file=sys.stderr)
        return 3
    finally:
        if log_file is not None:
            log_file.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        plot_curves(run_dir, loss_log, eval_log, val_log)
        message = {
            "done": f"finished {result.epoch} epochs ({result.step} steps)",
            "max_steps": f"stopped at --max_steps after step {result.step}; continue with --resume",
            "max_minutes": f"stopped after {args.max_minutes} minutes at step {result.step}; continue with --resume",
        }[result.reason]
        with (run_dir / "log.txt").open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        print(f"{run_dir}: {message}")
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
