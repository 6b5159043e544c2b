"""Does a checkpoint miss motion by direction or by size? Its kernels' motion against DIS flow on Middlebury.

For each Middlebury "other" sequence the checkpoint's kernels are turned into a motion field per input
frame (the weighted mean sample position, ``cdfi.inference.motion.kernel_motion``) and compared with half
the OpenCV DIS flow between the inputs, the motion the DIS baseline uses (frame 0 sampled at
``-flow/2``, frame 2 at ``+flow/2``). Printed per sequence: PSNR of the output and of each warped frame
alone, the mean motion length of the model against DIS, their ratio (below 1: the model moves less
than the scene), the mean end-point error, and the kernels' mean spread. Full frames, fp32 unless
``--precision`` says otherwise, on the device of the runtime flags (the DIS flow always on the CPU).

    python benchmarks/motion_check.py --checkpoint checkpoints/cdfi_adacof_ours.pth
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import WorkError, run_cli
from cdfi.evaluation.metrics import psnr
from cdfi.flow import MissingOpenCVError, dis_flow
from cdfi.inference.motion import kernel_motion
from cdfi.io.checkpoint import load_model
from cdfi.io.images import quantize, read_image
from cdfi.io.paths import resolve_data_root
from cdfi.runtime import add_runtime_arguments, resolve_runtime
from datasets.benchmark_sets import middlebury_items
from models.adacof import pad_to_multiple


def analyse(
    model: torch.nn.Module,
    frame0: torch.Tensor,
    frame2: torch.Tensor,
    gt: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, float]:
    """Figures of one triplet (see the module docstring); the frames are on the CPU, the model anywhere."""
    h, w = frame0.shape[-2:]
    device = next(model.parameters()).device
    a, c = (pad_to_multiple(f[None]).to(device) for f in (frame0, frame2))
    with torch.inference_mode(), autocast():
        kernels = model.get_kernel(a, c)
        parts = model.synthesize_parts(a, c, kernels)
    k = {name: t.float().cpu() for name, t in kernels.items()}
    frame, warp0, warp2 = (t.float().cpu() for t in parts)
    flow = dis_flow(frame0, frame2)
    row = {
        name: psnr(gt, quantize(t[0, :, :h, :w].clamp(0, 1)))
        for name, t in (("psnr", frame), ("psnr_warp0", warp0), ("psnr_warp2", warp2))
    }
    for side, sign in ((1, -0.5), (2, 0.5)):
        motion, spread = kernel_motion(
            k[f"Weight{side}"], k[f"Alpha{side}"], k[f"Beta{side}"], model.kernel_size, model.dilation
        )
        motion, spread = motion[0, :, :h, :w], spread[0, 0, :h, :w]
        target = sign * flow
        row[f"len{side}"] = float(motion.norm(dim=0).mean())
        row[f"dis_len{side}"] = float(target.norm(dim=0).mean())
        row[f"epe{side}"] = float((motion - target).norm(dim=0).mean())
        row[f"spread{side}"] = float(spread.mean())
    return row


def measure(args: argparse.Namespace) -> None:
    """Analyse every Middlebury sequence and print the table."""
    items = middlebury_items(resolve_data_root(args.data_root))
    runtime = resolve_runtime(args)
    model = load_model(args.checkpoint, map_location=runtime.device).to(runtime.device)
    rows = []
    try:
        for item in tqdm(items, desc="Middlebury", leave=False):
            frame0, frame2, gt = read_image(item.frame0), read_image(item.frame2), read_image(item.gt)
            rows.append({"sequence": item.name, **analyse(model, frame0, frame2, gt, runtime.autocast)})
    except MissingOpenCVError as exc:
        raise WorkError(str(exc)) from None
    print(f"Kernel motion against half the DIS flow on Middlebury ({args.checkpoint}); lengths in px, mean over pixels")
    print("| sequence | PSNR | warp0 / warp2 alone | motion 0 / DIS | motion 2 / DIS | ratio | EPE 0 / 2 | spread |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in [
        *rows,
        {"sequence": "mean", **{k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "sequence"}},
    ]:
        ratio = (r["len1"] + r["len2"]) / max(r["dis_len1"] + r["dis_len2"], 1e-9)
        print(
            f"| {r['sequence']} | {r['psnr']:.2f} | {r['psnr_warp0']:.2f} / {r['psnr_warp2']:.2f} | "
            f"{r['len1']:.2f} / {r['dis_len1']:.2f} | {r['len2']:.2f} / {r['dis_len2']:.2f} | {ratio:.2f} | "
            f"{r['epe1']:.2f} / {r['epe2']:.2f} | {(r['spread1'] + r['spread2']) / 2:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and print the table; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="AdaCoF-family checkpoint")
    parser.add_argument("--data_root", default=None, help="folder holding middlebury_others/ (default: CDFI_DATA_ROOT)")
    add_runtime_arguments(parser, precision_default="fp32")
    return run_cli(measure, parser.parse_args(argv), on_interrupt="interrupted; no table was printed")


if __name__ == "__main__":
    sys.exit(main())
