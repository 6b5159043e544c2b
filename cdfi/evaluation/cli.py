"""Command line shared by ``test.py`` (CDFI) and ``test_compressed_adacof.py``: the published flags
plus ``--data_root``, ``--vimeo_dir``, ``--datasets``, ``--limit``, ``--save_grid``, ``--ensemble``, ``--prealign``
and LPIPS options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from cdfi.evaluation.protocol import SetResult, evaluate_set, write_results_json
from cdfi.inference.ensemble import add_ensemble_argument, with_ensemble
from cdfi.inference.prealign import add_prealign_argument, with_prealign
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import load_model
from cdfi.io.paths import CHECKPOINT_DIR, REPO_ROOT, resolve_checkpoint, resolve_data_root
from cdfi.runtime.precision import add_precision_argument, autocast, prepare_model, resolve_precision
from datasets.benchmark_sets import BENCHMARK_SETS, load_benchmark_set
from lpips_pytorch import BACKBONES, CONVENTIONS, build_lpips
from models import DEFAULT_SIZES, variant_name


def default_checkpoint(family: str, kernel_size: int, dilation: int) -> Path:
    """Published checkpoint path of a variant (``checkpoints/CDFI_adacof.pth`` for CDFI)."""
    if family == "cdfi_adacof":
        return CHECKPOINT_DIR / "CDFI_adacof.pth"
    return CHECKPOINT_DIR / f"{variant_name(family, kernel_size, dilation)}.pth"


def default_out_dir(family: str, kernel_size: int, dilation: int) -> Path:
    """Published output folder: ``test_output/cdfi_adacof`` or ``test_output/<family>_F_<k>_D_<d>``."""
    name = "cdfi_adacof" if family == "cdfi_adacof" else variant_name(family, kernel_size, dilation)
    return REPO_ROOT / "test_output" / name


def build_parser(family: str, description: str) -> argparse.ArgumentParser:
    """Argument parser with the published flags and this project's additions."""
    k, d = DEFAULT_SIZES[family]
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU when no GPU is available)")
    p.add_argument("--kernel_size", type=int, default=k, help=f"kernel size F (default {k})")
    p.add_argument("--dilation", type=int, default=d, help=f"dilation D (default {d})")
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: the published file under checkpoints/)"
    )
    p.add_argument(
        "--data_root",
        default=None,
        help="folder holding middlebury_others/ and ucf101_interp_ours/ (default: $CDFI_DATA_ROOT, else test_data/)",
    )
    p.add_argument(
        "--vimeo_dir",
        default=None,
        help="Vimeo-90K triplet folder (tri_testlist.txt, sequences/); adds the vimeo90k set",
    )
    p.add_argument("--out_dir", default=None, help="output folder (default: the published test_output/<variant>)")
    p.add_argument(
        "--datasets",
        default=None,
        help=f"comma-separated sets among {','.join(BENCHMARK_SETS)} "
        "(default: middlebury,ucf101, plus vimeo90k with --vimeo_dir)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items of each set")
    p.add_argument(
        "--save_grid",
        action="store_true",
        help="also write grid.png per item: input A, prediction, ground truth, input C, error map",
    )
    p.add_argument(
        "--lpips_net", choices=tuple(BACKBONES), default="squeeze", help="LPIPS backbone (published: squeeze)"
    )
    p.add_argument(
        "--lpips_backbone",
        default=None,
        help="ImageNet weights of the LPIPS backbone (torchvision state dict); "
        "default: torchvision's cache, else LPIPS is n/a",
    )
    p.add_argument(
        "--lpips_convention",
        choices=CONVENTIONS,
        default="published",
        help="published: [0,1] images fed to LPIPS as the paper did; standard: mapped to [-1,1]",
    )
    add_precision_argument(p, default="fp32")
    add_ensemble_argument(p)
    add_prealign_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing results.json in --out_dir")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def select_device(gpu_id: int) -> torch.device:
    """``cuda:<gpu_id>`` when CUDA is available, else the CPU (with a one-line note)."""
    if not torch.cuda.is_available():
        print("note: no GPU available; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if not 0 <= gpu_id < torch.cuda.device_count():
        raise ValueError(f"--gpu_id {gpu_id}: only {torch.cuda.device_count()} GPU(s) visible")
    torch.cuda.set_device(gpu_id)
    return torch.device("cuda", gpu_id)


def _set_keys(flag: str | None, vimeo_dir: str | None) -> list[str]:
    if flag is None:
        return ["middlebury", "ucf101"] + (["vimeo90k"] if vimeo_dir else [])
    keys = [k.strip() for k in flag.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BENCHMARK_SETS]
    if unknown or not keys:
        raise ValueError(
            f"--datasets: unknown set(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHMARK_SETS)}"
        )
    return keys


def run(family: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, evaluate, print rows and averages, write PNGs and results.json; exit status
    (1 with a one-line message for bad input, 130 after Ctrl-C)."""
    args = build_parser(family, description).parse_args(argv)
    try:
        return _run(family, args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # images are written atomically, one by one; results.json only at the end
        lead = "" if args.no_progress else "\n"
        print(f"{lead}interrupted; results.json was not written", file=sys.stderr)
        return 130


def _run(family: str, args: argparse.Namespace) -> int:
    """The body of ``run``; raises ValueError/OSError with one-line messages."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    keys = _set_keys(args.datasets, args.vimeo_dir)
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(family, args.kernel_size, args.dilation)
    ensure_writable(out_dir / "results.json", args.force)
    data_root = resolve_data_root(args.data_root)
    sets = [load_benchmark_set(k, data_root, args.vimeo_dir) for k in keys]
    default = default_checkpoint(family, args.kernel_size, args.dilation)
    checkpoint = resolve_checkpoint(args.checkpoint or default, explicit=args.checkpoint is not None)
    device = select_device(args.gpu_id)
    precision = resolve_precision(args.precision, device)
    model = load_model(checkpoint, family, args.kernel_size, args.dilation, map_location=device)
    model = with_ensemble(with_prealign(prepare_model(model, device, precision), args.prealign), args.ensemble)
    lpips_model = build_lpips(args.lpips_net, args.lpips_backbone, args.lpips_convention)
    if lpips_model is not None:
        lpips_model = lpips_model.to(device)
    results: list[SetResult] = []
    for bench in sets:
        result = evaluate_set(
            model,
            bench,
            out_dir,
            limit=args.limit,
            device=device,
            lpips_model=lpips_model,
            save_grid=args.save_grid,
            autocast=lambda: autocast(device, precision),
            progress=not args.no_progress,
        )
        results.append(result)
        print(result.summary(), flush=True)
    meta = {
        "model": family,
        "kernel_size": args.kernel_size,
        "dilation": args.dilation,
        "checkpoint": str(checkpoint),
        "data_root": str(data_root),
        "vimeo_dir": args.vimeo_dir,
        "limit": args.limit,
        "precision": precision,
        "ensemble": args.ensemble,
        "prealign": args.prealign,
        "device": str(device),
        "lpips": None if lpips_model is None else {"net": args.lpips_net, "convention": args.lpips_convention},
        "metrics": "PSNR/SSIM: skimage.metrics on the 8-bit PNG read back, data_range=1",
    }
    path = write_results_json(out_dir / "results.json", results, meta, force=True)
    print(f"results: {path}")
    return 0 if all(r.rows for r in results) else 1
