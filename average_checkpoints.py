"""Average the weights of checkpoints of one variant into one file (a "model soup").

The mean of a run's last few checkpoints often scores a little above any one of them (this project's
shipped CDFI is such a mean; ``checkpoints/MODEL_CARD.md``). All files must hold the same variant and
sampling rule; the output is in the published format plus metadata, and lists its sources.

    python average_checkpoints.py run/step250.pth run/step362.pth --out soup.pth [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdfi.cli import run_cli
from cdfi.io.atomic import ensure_writable
from cdfi.io.checkpoint import CheckpointError, average_weights, load_checkpoint, save_checkpoint


def average(args: argparse.Namespace) -> None:
    """Check the output, average the inputs' weights and write the result (nothing written on bad input)."""
    out = ensure_writable(args.out, args.force)
    if any(Path(p).resolve() == out.resolve() for p in args.checkpoints):
        raise CheckpointError(f"{out}: is one of the inputs; write the average elsewhere")
    model = average_weights(args.checkpoints)
    steps = [load_checkpoint(p).meta.get("step") for p in args.checkpoints]
    extra = {"averaged_from": [Path(p).name for p in args.checkpoints]}
    if all(isinstance(s, int) for s in steps):
        extra["step"] = max(steps)
    save_checkpoint(out, model, epoch=0, extra=extra, force=args.force)
    variant = f"{model.model_name} F{model.kernel_size}/D{model.dilation}"
    print(f"{out}: mean of {len(args.checkpoints)} checkpoints ({variant})")


def main(argv: list[str] | None = None) -> int:
    """Write the averaged checkpoint; returns the exit status (2 bad input, 1 failure, 130 interrupted)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="two or more checkpoint files of one variant")
    parser.add_argument("--out", required=True, help="output checkpoint file")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return run_cli(average, parser.parse_args(argv), on_interrupt="interrupted: no average was written")


if __name__ == "__main__":
    sys.exit(main())
