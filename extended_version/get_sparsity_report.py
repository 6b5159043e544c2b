"""The published ``extended_version/get_sparsity_report.py``: per-layer density of a pruned model.

Run from this folder, as the published README does::

    python get_sparsity_report.py --model adacof --checkpoint ../checkpoints/adacof_pruned_lr_1e-2_lam_1e-4_Np_10.pth \\
        --kernel_size 5 --dilation 1 --inactive

Prints ``# of model parameters is: N`` and the published table: ``Name`` (the weight's parameter
name), ``Density`` (nonzero entries / entries), ``In``/``Out`` (its input and output channels) and
``In'``/``Out'`` (``int(sqrt(Density) * channels)``, the reduced counts of the paper's rule, which
can be 0). The checkpoint must hold the ``--model``/``--kernel_size``/``--dilation`` variant (published
defaults: cdfi_adacof, 11, 2). ``--inactive`` only prints; without it the published argument parsing
makes the run folder ``model_weights/<uid>``, which here holds ``args.txt``, the table as ``log.txt``,
``sparsity.csv`` (for ``compress.py --report``) and ``sparsity.png``. Accepts every published flag;
those of training are unused, as published. A mapping onto ``cdfi.compression.extended`` (the library
of ``sparsity_report.py``); see README.md here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdfi.cli import UsageError, run_cli
from cdfi.compression.densities import LayerDensity
from cdfi.compression.extended import (
    REPORT_FILES,
    RunFolder,
    add_published_flags,
    published_sparsity_report,
)
from models import list_models


def build_parser() -> argparse.ArgumentParser:
    """Every flag of the published script (those of the published train.py)."""
    p = argparse.ArgumentParser(description="Per-layer density of a pruned model (the published extended version).")
    add_published_flags(p, runtime=False)
    return p


def _run(args: argparse.Namespace) -> list[LayerDensity]:
    if args.model not in list_models():
        raise UsageError(f"--model {args.model}: no such model here; use one of {', '.join(list_models())}")
    if args.checkpoint is None:
        raise UsageError("--checkpoint: give the pruned checkpoint to report on")
    folder = None if args.inactive else RunFolder.for_uid(args.uid, args.force, outputs=REPORT_FILES)
    args_text = ""
    if folder is not None:
        args_text = str(argparse.Namespace(**vars(args), save_path=str(folder.root), log=str(folder.log_path)))
    return published_sparsity_report(args.checkpoint, args.model, args.kernel_size, args.dilation, folder, args_text)


def main(argv: list[str] | None = None) -> int:
    """Print the published report; returns the exit status (2: bad flags or input)."""
    args = build_parser().parse_args(argv)
    return run_cli(_run, args, on_interrupt="interrupted")


if __name__ == "__main__":
    sys.exit(main())
