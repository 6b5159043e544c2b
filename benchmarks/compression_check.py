"""Does density -> width reproduce the published compressed AdaCoF? And does the result train?

1. For F5/D1 and F11/D2, the densities a pruned AdaCoF would need to give the published compressed
   widths, d = c_in' c_out' / (c_in c_out), are fed to the width solver (both methods); the table
   lists every layer whose widths differ from the published compressed layout.
2. The same with each density perturbed by multiplicative log-normal noise (real pruning does not hit
   the published widths exactly): mean / max absolute channel difference over a few seeds.
3. The compressed F5/D1 model built from the emitted spec takes a few Adamax steps on a triplet of
   real frames (img_seq 0, 1, 2; a crop), reporting the Charbonnier loss before and after.

Usage: python benchmarks/compression_check.py [--noise 0.1 0.2] [--seeds 5] [--steps 6] [--crop 64]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import run_cli
from cdfi.compression.spec import arch_from_widths, published_densities, spec_ties
from cdfi.compression.tracing import trace_channel_graph
from cdfi.compression.widths import solve_widths
from cdfi.io.images import read_image
from cdfi.training.losses import charbonnier
from models import make_model


def conv_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {n: (m.in_channels, m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def differences(got: dict[str, tuple[int, int]], want: dict[str, tuple[int, int]]) -> list[tuple[str, int]]:
    """(layer, max |channel difference| over in/out) for every layer."""
    return [(n, max(abs(a - b) for a, b in zip(got[n], want[n], strict=True))) for n in want]


def conv_params(model: nn.Module, widths: dict[str, tuple[int, int]]) -> int:
    """Parameters of the convolutions of ``model`` rebuilt at ``widths`` (weights and biases)."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            c_in, c_out = widths[name]
            total += c_in * c_out * math.prod(m.kernel_size) + (c_out if m.bias is not None else 0)
    return total


def check_variant(k: int, d: int, noise: list[float], seeds: int) -> dict:
    full, small = make_model("adacof", k, d), make_model("compressed_adacof", k, d)
    frames = torch.rand(1, 3, 32, 32)
    graph = trace_channel_graph(full, frames, frames)
    ties = spec_ties("compressed_adacof", k, d, small.arch)
    published = conv_widths(small)
    densities = published_densities(full, small)
    print(f"\n== AdaCoF F{k}/D{d}: {len(graph.convs)} convolutions, {len(graph.free_groups())} free channel groups ==")
    specs = {}
    for method in ("product", "sqrt"):
        widths = solve_widths(graph, densities, method=method, ties=ties)
        diff = differences(widths, published)
        changed = [(n, widths[n], published[n]) for n, v in diff if v]
        values = [v for _, v in diff]
        print(
            f"{method:>7}: {len(changed)} of {len(diff)} layers differ from the published layout; "
            f"mean |diff| {np.mean(values):.2f}, max {max(values)} channels"
        )
        for name, got, want in changed:
            print(f"          {name:<34} got {got[0]:>4}->{got[1]:<4} published {want[0]:>4}->{want[1]:<4}")
        specs[method] = arch_from_widths("compressed_adacof", k, d, small.arch, widths)
    target = conv_params(full, published)
    for sigma in noise:
        for method in ("product", "sqrt"):
            means, maxes, ratios = [], [], []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                noisy = {n: min(1.0, v * math.exp(rng.normal(0.0, sigma))) for n, v in densities.items()}
                widths = solve_widths(graph, noisy, method=method, ties=ties)
                diff = [v for _, v in differences(widths, published)]
                means.append(np.mean(diff))
                maxes.append(max(diff))
                ratios.append(conv_params(full, widths) / target)
            print(
                f"density noise sigma {sigma:.2f}, {method:>7}: mean |diff| {np.mean(means):.2f} channels, "
                f"worst layer {max(maxes)}, conv parameters {min(ratios):.2f}-{max(ratios):.2f}x the "
                f"published {target:,} (over {seeds} seeds)"
            )
    return specs


def train_steps(spec: dict, steps: int, crop: int) -> None:
    seq = Path(__file__).resolve().parent.parent.parent / "shared" / "sample_frames" / "img_seq"
    names = sorted(p for p in seq.glob("*.jpg"))[:3] if seq.is_dir() else []
    if len(names) == 3:
        f0, f1, f2 = (read_image(p)[:, :crop, :crop].unsqueeze(0) for p in names)
        source = f"{seq} (first three frames, {crop}x{crop} crop)"
    else:
        gen = torch.Generator().manual_seed(0)
        f0, f2 = torch.rand(2, 1, 3, crop, crop, generator=gen)
        f1 = 0.5 * (f0 + f2)
        source = "random frames (img_seq not found)"
    torch.manual_seed(0)
    model = make_model(spec["model"], spec["kernel_size"], spec["dilation"], arch=spec).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        out = model(f0, f2)
        loss = charbonnier(out["frame1"], f1) + 0.01 * out["g_Spatial"] + 0.005 * out["g_Occlusion"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    print(f"\n== training the compressed model from the emitted spec ({n_params:,} parameters) on {source} ==")
    print(f"loss per step: {' '.join(f'{v:.6f}' for v in losses)}  ({seconds / max(steps, 1):.2f} s/step, CPU)")


def main(argv: list[str] | None = None) -> int:
    """Run the three checks; returns the exit status (2: bad options, 130: interrupted)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--noise", type=float, nargs="*", default=[0.1, 0.2], help="log-normal sigma of density noise")
    p.add_argument("--seeds", type=int, default=5, help="noise draws per sigma (default 5)")
    p.add_argument("--steps", type=int, default=6, help="training steps on the emitted spec (0: skip)")
    p.add_argument("--crop", type=int, default=64, help="training crop size in px (default 64)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if any(not (math.isfinite(sigma) and sigma >= 0) for sigma in args.noise):
        p.error(f"--noise sigmas must be numbers >= 0, got {args.noise}")
    if args.steps < 0:
        p.error(f"--steps must be >= 0 (0 skips training), got {args.steps}")
    if args.crop < 17:
        p.error(f"--crop must be at least 17 px, got {args.crop}")
    return run_cli(run_checks, args, on_interrupt="interrupted; nothing is written by this check")


def run_checks(args: argparse.Namespace) -> None:
    """The three checks with the parsed options."""
    specs = check_variant(5, 1, args.noise, args.seeds)
    check_variant(11, 2, args.noise, args.seeds)
    if args.steps > 0:
        train_steps(specs["product"], args.steps, args.crop)


if __name__ == "__main__":
    sys.exit(main())
