"""Pack the footage and the validation split for the GPU training sprint, with the baselines computed here.

    python scripts/pack_sprint_data.py --footage data/footage --out build/sprint            # make sprint-data

Reads every clip folder of ``--footage`` (``make footage``), writes one near-lossless H.264 video per
clip's training frames and one lossless video per validation clip's held-out frames, and a manifest
with the training triplets, the validation split (the four clips' 45 triplets by default), the frame
average and DIS-flow baselines on it and the starting checkpoints' scores on it (fp32, on the CPU, the
published protocol's PSNR), so the GPU machine spends none of its time on them. Refuses (exit 2, nothing
written) when the videos pass ``--max_mib``. Everything is described in ``cdfi/training/sprint/bundle.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from cdfi.cli import run_cli
from cdfi.evaluation.baselines import DISFlow, Overlay
from cdfi.evaluation.metrics import psnr
from cdfi.io.checkpoint import load_model
from cdfi.io.download import sha256_file
from cdfi.io.images import quantize
from cdfi.io.video import list_frame_files, natural_key
from cdfi.training.sprint.bundle import BundleError, Encoding, SourceClip, ValidationSplit, pack_bundle
from datasets.make_triplets import read_frames

VALIDATION = ("bigbuckbunny", "bikes", "carphone_pristine", "img_seq")
"""The four clips whose held-out frames are the 45-triplet validation split of checkpoints/MODEL_CARD.md."""

CHECKPOINTS = ("checkpoints/cdfi_adacof_ours.pth", "checkpoints/compressed_adacof_F_5_D_1_ours.pth")


def _clip_folders(footage: Path, names: Sequence[str] | None) -> list[Path]:
    if not footage.is_dir():
        raise BundleError(f"{footage}: no such footage folder (make footage writes data/footage)")
    if names:
        folders = [footage / n for n in names]
        for f in folders:
            if not f.is_dir():
                raise BundleError(f"{f}: no such clip folder")
        return folders
    folders = sorted(
        (p for p in footage.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name)
    )
    if not folders:
        raise BundleError(f"{footage}: holds no clip folders")
    return folders


def _read(folders: Sequence[Path]) -> Iterator[SourceClip]:
    for folder in folders:
        if not list_frame_files(folder):
            raise BundleError(f"{folder}: holds no frames")
        yield SourceClip(folder.name, np.stack(list(read_frames(folder))))


def _as_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div(255)


def score_split(model: torch.nn.Module, split: ValidationSplit) -> list[float]:
    """PSNR of ``model`` on every item, as the published protocol scores it (8-bit output, skimage PSNR)."""
    scores = []
    with torch.no_grad():
        for clip, i, j, k in split.items:
            frames = split.clips[clip]
            pred = model(_as_tensor(frames[i])[None], _as_tensor(frames[k])[None])[0]
            scores.append(psnr(_as_tensor(frames[j]), quantize(pred.float())))
    return scores


def evaluate(split: ValidationSplit, checkpoints: Sequence[Path], baselines: bool, log: Any) -> dict[str, Any]:
    """The manifest entries ``baselines`` (frame average, DIS flow) and ``start`` (each checkpoint)."""
    out: dict[str, Any] = {"baselines": {}, "start": {}}
    if baselines:
        for name, model in (("overlay", Overlay()), ("dis_flow", DISFlow())):
            items = score_split(model, split)
            out["baselines"][name] = {"psnr": float(np.mean(items)), "items": items}
            log(f"{name}: {np.mean(items):.2f} dB on the {len(items)} validation triplets")
    for path in checkpoints:
        model = load_model(path).eval()
        t = time.monotonic()
        items = score_split(model, split)
        out["start"][model.model_name] = {
            "checkpoint": str(path),
            "sha256": sha256_file(path),
            "psnr": float(np.mean(items)),
            "items": items,
        }
        log(f"{path}: {np.mean(items):.2f} dB ({time.monotonic() - t:.0f} s, fp32 CPU)")
    return out


def pack(args: argparse.Namespace) -> None:
    """Check the inputs, then pack (the baselines and start scores inside, before the folder appears)."""
    if args.max_mib <= 0 or not 0 <= args.crf <= 51:
        raise BundleError(f"--max_mib must be positive and --crf in 0..51, got {args.max_mib}, {args.crf}")
    folders = _clip_folders(args.footage, args.clips)
    names = [f.name for f in folders]
    missing = [v for v in args.validation if v not in names]
    if missing:
        raise BundleError(f"validation clip {missing[0]!r} is not among the clips to pack ({args.footage})")
    checkpoints = [Path(p) for p in args.checkpoints]
    for path in checkpoints:
        if not path.is_file():
            raise BundleError(f"{path}: checkpoint not found")
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t = time.monotonic()
    manifest = pack_bundle(
        _read(folders),
        args.out,
        validation=args.validation,
        encoding=Encoding(args.crf, args.preset, args.tune or None),
        max_mib=args.max_mib,
        max_frames=args.max_frames,
        evaluate=lambda split: evaluate(split, checkpoints, not args.no_baselines, log),
        extra={"source": str(args.footage), "packed": time.strftime("%Y-%m-%d")},
        force=args.force,
        log=log,
    )
    clips, val = manifest["clips"], manifest["validation"]
    print(
        f"{args.out}: {manifest['bytes'] / 2**20:.1f} MiB of video, {len(clips)} training clips "
        f"({sum(len(c['triplets']) for c in clips):,} triplets, {manifest['train_psnr_to_source']} dB to the source), "
        f"{len(val['items'])} validation triplets (lossless); {time.monotonic() - t:.0f} s"
    )
    for name, entry in manifest.get("baselines", {}).items():
        print(f"  {name}: {entry['psnr']:.2f} dB")
    for name, entry in manifest.get("start", {}).items():
        print(f"  {name} ({entry['checkpoint']}): {entry['psnr']:.2f} dB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--footage", type=Path, default=Path("data/footage"), help="folder of clip folders")
    parser.add_argument("--out", type=Path, default=Path("build/sprint"), help="bundle folder to write")
    parser.add_argument("--clips", nargs="+", help="clip folders to pack (default: every folder in --footage)")
    parser.add_argument("--validation", nargs="+", default=list(VALIDATION), help="validation clips, in order")
    parser.add_argument("--max_frames", type=int, default=100, help="training frames kept per clip (default 100)")
    parser.add_argument("--crf", type=int, default=20, help="x264 quality of the training clips (default 20)")
    parser.add_argument("--preset", default="veryslow", help="x264 preset (default veryslow)")
    parser.add_argument("--tune", default="psnr", help="x264 tune ('' for none; default psnr)")
    parser.add_argument("--max_mib", type=float, default=24.0, help="refuse a bundle larger than this (default 24)")
    parser.add_argument("--checkpoints", nargs="*", default=list(CHECKPOINTS), help="starting checkpoints to score")
    parser.add_argument("--no_baselines", action="store_true", help="skip the frame-average and DIS baselines")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the scoring")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    args = parser.parse_args(argv)
    return run_cli(pack, args, on_interrupt="interrupted; no bundle was written")


if __name__ == "__main__":
    sys.exit(main())
