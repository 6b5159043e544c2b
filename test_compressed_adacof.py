"""Evaluate compressed AdaCoF (F5/D1 or F11/D2) on Middlebury "other" and UCF101-DVF as published.

Example: python test_compressed_adacof.py --gpu_id 0 --kernel_size 5 --dilation 1
"""

import sys

from cdfi.evaluation.cli import Face, run

FACE = Face("compressed_adacof", "Evaluate compressed AdaCoF (PSNR, SSIM, LPIPS as published).")


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status."""
    return run(FACE, argv)


if __name__ == "__main__":
    sys.exit(main())
