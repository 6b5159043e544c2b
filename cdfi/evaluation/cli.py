"""Command line shared by ``test.py`` (CDFI), ``test_compressed_adacof.py`` and ``mytest.py``.

The published flags (``--gpu_id``, ``--kernel_size``, ``--dilation``, ``--checkpoint``, ``--out_dir``,
``--vimeo_dir``; ``--model`` in ``mytest.py``) plus this project's: the runtime (``--device``,
``--precision``, ``--threads``), ``--data_root``, ``--datasets``, ``--limit``, ``--layout``,
``--config`` (AdaCoF-pytorch checkpoints), ``--vimeo_augment``/``--seed``, ``--save_grid``,
``--ensemble``, ``--prealign``, LPIPS options, ``--force``. One evaluation loop
(``cdfi.evaluation.protocol``) serves every script; they differ only in the model family and in the
layout of what they write (``cdfi.evaluation.layout``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdfi.cli import UsageError, run_cli
from cdfi.evaluation.layout import LAYOUTS, OutputLayout
from cdfi.evaluation.protocol import SetResult, evaluate_set, write_results_json
from cdfi.inference.ensemble import add_ensemble_argument
from cdfi.inference.prealign import add_prealign_argument
from cdfi.inference.stack import InferenceOptions, build_inference_stack
from cdfi.io.adacof_config import sizes_agreeing_with_config
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import load_model
from cdfi.io.paths import CHECKPOINT_DIR, REPO_ROOT, MissingCheckpointError, resolve_checkpoint, resolve_data_root
from cdfi.runtime import add_runtime_arguments, resolve_runtime
from datasets.benchmark_sets import BENCHMARK_SETS, BenchmarkSet, load_benchmark_set, published_vimeo_augment
from lpips_pytorch import BACKBONES, CONVENTIONS, build_lpips
from models import DEFAULT_SIZES, PUBLISHED_VARIANTS, variant_name

__all__ = ["Face", "build_parser", "default_checkpoint", "default_out_dir", "run"]

INTERRUPTED = "interrupted; results.json was not written"
ADACOF_CHECKPOINT = "ckpt.pth"


@dataclass(frozen=True)
class Face:
    """What one evaluation script presents: its model family (``None``: chosen by ``--model`` among
    ``models``), its default kernel size and dilation (``None``: the family's own), and its layout."""

    family: str | None
    description: str
    layout: str = "project"
    models: tuple[str, ...] = ()
    sizes: tuple[int, int] | None = None

    def default_sizes(self, family: str) -> tuple[int, int]:
        """(kernel size, dilation) when the flags give none: the script's own, else the family's."""
        return self.sizes or DEFAULT_SIZES[family]


@dataclass(frozen=True)
class Variant:
    """The model to evaluate and the checkpoint flag's meaning for it."""

    family: str
    kernel_size: int
    dilation: int
    checkpoint: Path
    explicit: bool
    config: Path | None = None


def default_checkpoint(family: str, kernel_size: int, dilation: int) -> Path:
    """Published checkpoint path of a variant (``checkpoints/CDFI_adacof.pth`` for CDFI)."""
    if family == "cdfi_adacof":
        return CHECKPOINT_DIR / "CDFI_adacof.pth"
    return CHECKPOINT_DIR / f"{variant_name(family, kernel_size, dilation)}.pth"


def default_out_dir(family: str, kernel_size: int, dilation: int) -> Path:
    """Published output folder: ``test_output/cdfi_adacof`` or ``test_output/<family>_F_<k>_D_<d>``."""
    name = "cdfi_adacof" if family == "cdfi_adacof" else variant_name(family, kernel_size, dilation)
    return REPO_ROOT / "test_output" / name


def build_parser(face: Face) -> argparse.ArgumentParser:
    """Argument parser with the published flags and this project's additions."""
    p = argparse.ArgumentParser(description=face.description)
    if face.family is None:
        p.add_argument(
            "--model", choices=face.models, default=None, help=f"model to evaluate (default {face.models[0]})"
        )
        k, d = face.default_sizes(face.models[0])
    else:
        k, d = face.default_sizes(face.family)
    add_runtime_arguments(p, precision_default="fp32")
    p.add_argument("--kernel_size", type=int, default=None, help=f"kernel size F (default {k})")
    p.add_argument("--dilation", type=int, default=None, help=f"dilation D (default {d})")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (default: the published file under checkpoints/, else this project's shipped one)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="AdaCoF-pytorch's config.txt: evaluate its checkpoint (--checkpoint, default ckpt.pth beside it) "
        "as AdaCoF with the kernel size and dilation the file gives (dilation 1 when it names none)",
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
    p.add_argument(
        "--vimeo_augment",
        action="store_true",
        help="read the Vimeo-90K test split as the published evaluation does, through its training reader: "
        "each triplet randomly mirrored left-right and top-bottom and its inputs randomly exchanged "
        "(draws seeded by --seed); default off: every triplet as it is",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --vimeo_augment draws (default 0)")
    p.add_argument("--out_dir", default=None, help="output folder (default: the published test_output/<variant>)")
    p.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default=face.layout,
        help="file names and printout: project = <set data folder>/<item>/<its gt name>, short rows; "
        "published = as the published mytest.py/test.py (middlebury_others/<seq>/output.png, "
        f"ucf101-dvf/<n>/output.png, vimeo90k/<i>.png, Average: lines) (default {face.layout})",
    )
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
        help="also write a grid image per item: input A, prediction, ground truth, input C, error map",
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
    add_ensemble_argument(p)
    add_prealign_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing results.json in --out_dir")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _set_keys(flag: str | None, vimeo_dir: str | None) -> list[str]:
    if flag is None:
        return ["middlebury", "ucf101"] + (["vimeo90k"] if vimeo_dir else [])
    keys = [k.strip() for k in flag.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BENCHMARK_SETS]
    if unknown or not keys:
        raise UsageError(
            f"--datasets: unknown set(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHMARK_SETS)}"
        )
    return keys


def _variant(face: Face, args: argparse.Namespace) -> Variant:
    """Model family, sizes and checkpoint from ``--model``/``--config``/``--kernel_size``/``--dilation``."""
    chosen = getattr(args, "model", None)
    explicit = args.checkpoint is not None
    if args.config is not None:
        if chosen is not None:
            raise UsageError(f"--config evaluates an AdaCoF-pytorch checkpoint (model adacof); drop --model {chosen}")
        config = Path(args.config)
        k, d = sizes_agreeing_with_config(config, args.kernel_size, args.dilation)
        checkpoint = Path(args.checkpoint) if explicit else config.parent / ADACOF_CHECKPOINT
        return Variant("adacof", k, d, checkpoint, True, config)
    family = chosen or face.family or face.models[0]
    default_k, default_d = face.default_sizes(family)
    k = default_k if args.kernel_size is None else args.kernel_size
    d = default_d if args.dilation is None else args.dilation
    for flag, value in (("--kernel_size", k), ("--dilation", d)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if explicit:
        return Variant(family, k, d, Path(args.checkpoint), True)
    if (k, d) not in PUBLISHED_VARIANTS[family]:
        published = ", ".join(f"F{pk}/D{pd}" for pk, pd in PUBLISHED_VARIANTS[family])
        raise UsageError(
            f"--kernel_size {k} --dilation {d}: {family} has no published checkpoint of these settings "
            f"(published: {published}); pass --checkpoint PATH"
        )
    return Variant(family, k, d, default_checkpoint(family, k, d), False)


def _checkpoint(variant: Variant) -> Path:
    """The file to load: the one named, else the published default or this project's shipped one."""
    try:
        return resolve_checkpoint(variant.checkpoint, explicit=variant.explicit)
    except MissingCheckpointError:
        if variant.explicit:
            raise
        path = variant.checkpoint
        raise MissingCheckpointError(
            f"{path}: checkpoint not found, nor a shipped replacement; fetch it with `make weights` or "
            f"`python checkpoints/download.py {path.stem}`, or pass --checkpoint PATH"
        ) from None


def _load_sets(keys: list[str], data_root: Path, args: argparse.Namespace) -> list[BenchmarkSet]:
    if args.vimeo_augment and "vimeo90k" not in keys:
        raise UsageError("--vimeo_augment changes only the vimeo90k set; add it with --vimeo_dir DIR")
    sets = [load_benchmark_set(k, data_root, args.vimeo_dir) for k in keys]
    if args.vimeo_augment:
        sets = [published_vimeo_augment(b, args.seed) if b.key == "vimeo90k" else b for b in sets]
    return sets


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


def evaluate(face: Face, args: argparse.Namespace) -> int:
    """Evaluate as the parsed ``args`` say; returns 0, or 1 when a set had no item that could be scored.

    Raises ``ValueError``/``OSError`` with one-line messages for bad input; nothing is written before
    the arguments, the data sets, the checkpoint and the runtime have all been checked."""
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    keys = _set_keys(args.datasets, args.vimeo_dir)
    variant = _variant(face, args)
    options = InferenceOptions(prealign=args.prealign, ensemble=args.ensemble)
    layout: OutputLayout = LAYOUTS[args.layout]
    out_dir = (
        Path(args.out_dir) if args.out_dir else default_out_dir(variant.family, variant.kernel_size, variant.dilation)
    )
    ensure_writable(out_dir / "results.json", args.force)
    data_root = resolve_data_root(args.data_root)
    sets = _load_sets(keys, data_root, args)
    checkpoint = _checkpoint(variant)
    runtime = resolve_runtime(args)
    model = load_model(
        checkpoint,
        variant.family,
        variant.kernel_size,
        variant.dilation,
        map_location=runtime.device,
        assume_dilation=variant.dilation if variant.config else None,
    )
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _, net = build_inference_stack(model, runtime, options)
    lpips_model = build_lpips(args.lpips_net, args.lpips_backbone, args.lpips_convention)
    if lpips_model is not None:
        lpips_model = lpips_model.to(runtime.device)
    _print(layout.preamble(variant.family, variant.kernel_size, variant.dilation, parameters))
    results: list[SetResult] = []
    for bench in sets:
        _print(layout.banner(bench.key))
        result = evaluate_set(
            net,
            bench,
            out_dir,
            limit=args.limit,
            layout=layout,
            runtime=runtime,
            lpips_model=lpips_model,
            save_grid=args.save_grid,
            progress=not args.no_progress,
        )
        results.append(result)
        _print([layout.summary(result)])
    meta: dict[str, Any] = {
        "model": variant.family,
        "kernel_size": variant.kernel_size,
        "dilation": variant.dilation,
        "checkpoint": str(checkpoint),
        "config": str(variant.config) if variant.config else None,
        "data_root": str(data_root),
        "vimeo_dir": args.vimeo_dir,
        "vimeo_augment": _augment_meta(sets, args) if args.vimeo_augment else None,
        "limit": args.limit,
        "layout": layout.name,
        "precision": runtime.precision,
        "ensemble": options.ensemble,
        "prealign": options.prealign,
        "device": str(runtime.device),
        "threads": runtime.threads,
        "lpips": None if lpips_model is None else {"net": args.lpips_net, "convention": args.lpips_convention},
        "metrics": "PSNR/SSIM: skimage.metrics on the 8-bit PNG read back, data_range=1",
    }
    path = write_results_json(out_dir / "results.json", results, meta, force=True)
    print(f"results: {path}")
    return 0 if all(r.rows for r in results) else 1


def _augment_meta(sets: list[BenchmarkSet], args: argparse.Namespace) -> dict[str, Any]:
    """The seed and each evaluated Vimeo-90K item's views, for results.json."""
    vimeo = next(b for b in sets if b.key == "vimeo90k")
    items = vimeo.items[: args.limit] if args.limit is not None else vimeo.items
    return {"seed": args.seed, "views": {item.name: item.views() for item in items}}


def run(face: Face, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and evaluate; the exit status of ``cdfi.cli.run_cli`` (2 bad input, 1 failure or
    a set with no scored item, 130 after Ctrl-C, saying that results.json was not written)."""
    args = build_parser(face).parse_args(argv)
    return run_cli(evaluate, face, args, on_interrupt=INTERRUPTED, status=lambda rc: rc)
