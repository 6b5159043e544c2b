"""Evaluate CDFI (F11/D2) on Middlebury "other" and UCF101-DVF (and Vimeo-90K test) as published.

Example: python test.py --gpu_id 0 --kernel_size 11 --dilation 2
"""

import sys

from cdfi.evaluation.cli import Face, run

FACE = Face("cdfi_adacof", "Evaluate the CDFI model (PSNR, SSIM, LPIPS as published).")


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status."""
    return run(FACE, argv)


if __name__ == "__main__":
    sys.exit(main())
