"""Evaluate CDFI or compressed AdaCoF with the published ``mytest.py``'s flags, files and printout.

Predictions go to ``test_output/<variant>/middlebury_others/<seq>/output.png``,
``ucf101-dvf/<n>/output.png`` and ``vimeo90k/<i>.png``, with ``results.json`` beside them.

Examples:
    python mytest.py --gpu_id 0
    python mytest.py --gpu_id 0 --model compressed_adacof --kernel_size 5 --dilation 1
    python mytest.py --gpu_id 0 --model compressed_adacof --kernel_size 11 --dilation 2
"""

import sys

from cdfi.evaluation.cli import Face, run

FACE = Face(
    None,
    "Compression-Driven Frame Interpolation Evaluation",
    layout="published",
    models=("cdfi_adacof", "compressed_adacof"),
    sizes=(11, 2),
)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status."""
    return run(FACE, argv)


if __name__ == "__main__":
    sys.exit(main())
