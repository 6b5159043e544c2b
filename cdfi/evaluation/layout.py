"""Where an evaluation writes its predictions and how it prints its rows.

Two layouts share one evaluation loop (``cdfi.evaluation.protocol``):

* ``project`` (``test.py``, ``test_compressed_adacof.py``): a folder per set named like its data
  (``middlebury_others``, ``ucf101_interp_ours``, ``vimeo90k_test``), each prediction under its item's
  own name (``<seq>/frame10i11.png``, ``<n>/frame_01.png``, ``<entry>/im2.png``), one short row per item
  and a mean line per set.
* ``published`` (``mytest.py``): the files and printout of the published evaluation scripts (the
  parameter count, model and sizes first):
  ``middlebury_others/<seq>/output.png``, ``ucf101-dvf/<n>/output.png`` and ``vimeo90k/<i>.png``
  (``i``: the item's position in the test list, from 0; the published script numbers its shuffled
  list the same way); a ``Test: <set>`` banner, a PSNR/SSIM/lpips
  column header, fixed-width rows with 16 decimals and an ``Average:`` line for Middlebury and
  UCF101-DVF; ``idx: i, psnr: ..`` rows and the three means on one line for Vimeo-90K.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cdfi.evaluation.protocol import ItemResult, SetResult
    from datasets.benchmark_sets import BenchmarkItem

__all__ = ["LAYOUTS", "PROJECT", "PUBLISHED", "OutputLayout", "ProjectLayout", "PublishedLayout"]

RULE = "=" * 31


def _lpips_text(value: float | None, spec: str, missing_spec: str = "") -> str:
    """``value`` formatted by ``spec``, or ``n/a`` (formatted by ``missing_spec``) when LPIPS is not available."""
    return format(value, spec) if value is not None else format("n/a", missing_spec)


class OutputLayout:
    """The interface of a layout: folder names, prediction paths and printed lines."""

    name = "layout"
    folders: ClassVar[dict[str, str]] = {}

    def set_dir(self, out_root: str | Path, key: str, default: str) -> Path:
        """Folder of set ``key`` under ``out_root`` (``default``: the set's own folder name)."""
        return Path(out_root) / self.folders.get(key, default)

    def output_path(self, set_dir: Path, key: str, item: BenchmarkItem, index: int) -> Path:
        """Where the prediction of the ``index``-th evaluated item of set ``key`` is written."""
        raise NotImplementedError

    def grid_path(self, output: Path) -> Path:
        """Where ``--save_grid`` puts the comparison strip of the prediction at ``output``."""
        return output.parent / "grid.png"

    def preamble(self, model: str, kernel_size: int, dilation: int, parameters: int) -> list[str]:
        """Lines printed once the model is loaded, before any set."""
        return []

    def banner(self, key: str) -> list[str]:
        """Lines printed before set ``key`` is evaluated."""
        return []

    def header(self, key: str) -> list[str]:
        """Lines printed just before the first row of set ``key``."""
        return []

    def row(self, key: str, index: int, row: ItemResult) -> str:
        """The printed line of one scored item."""
        raise NotImplementedError

    def summary(self, result: SetResult) -> str:
        """The printed line(s) after a set."""
        raise NotImplementedError


class ProjectLayout(OutputLayout):
    """This project's layout (see the module docstring)."""

    name = "project"

    def output_path(self, set_dir: Path, key: str, item: BenchmarkItem, index: int) -> Path:
        return set_dir / item.name / item.output_name

    def row(self, key: str, index: int, row: ItemResult) -> str:
        lpips = _lpips_text(row.lpips, ".4f")
        return f"{key}/{row.name}: PSNR {row.psnr:.2f}  SSIM {row.ssim:.4f}  LPIPS {lpips}"

    def summary(self, result: SetResult) -> str:
        return result.summary()


class PublishedLayout(OutputLayout):
    """The published scripts' layout and printout (see the module docstring)."""

    name = "published"
    folders: ClassVar[dict[str, str]] = {
        "middlebury": "middlebury_others",
        "ucf101": "ucf101-dvf",
        "vimeo90k": "vimeo90k",
    }
    titles: ClassVar[dict[str, str]] = {
        "middlebury": "Middlebury_others",
        "ucf101": "UCF101-DVF",
        "vimeo90k": "Vimeo-90K",
    }

    def output_path(self, set_dir: Path, key: str, item: BenchmarkItem, index: int) -> Path:
        if key == "vimeo90k":
            return set_dir / f"{index}.png"
        return set_dir / item.name / "output.png"

    def grid_path(self, output: Path) -> Path:
        if output.name == "output.png":
            return output.parent / "grid.png"
        return output.with_name(f"{output.stem}_grid.png")

    def preamble(self, model: str, kernel_size: int, dilation: int, parameters: int) -> list[str]:
        return [
            RULE,
            f"# of model parameters is: {parameters}",
            f"Loading model {model}...",
            f"Kernel size: {kernel_size}, Dilation: {dilation}",
        ]

    def banner(self, key: str) -> list[str]:
        return [RULE, f"Test: {self.titles.get(key, key)}"]

    def header(self, key: str) -> list[str]:
        if key == "vimeo90k":
            return []
        return [f"{'PSNR':>25s}{'SSIM':>21s}{'lpips':>21s}"]

    def row(self, key: str, index: int, row: ItemResult) -> str:
        if key == "vimeo90k":
            lpips = _lpips_text(row.lpips, "f")
            return f"idx: {index}, psnr: {row.psnr:f}, ssim: {row.ssim:f}, lpips: {lpips}"
        return f"{row.name + ': ':<15s}{row.psnr:<20.16f}{row.ssim:<23.16f}{_lpips_text(row.lpips, '<23.16f', '<23s')}"

    def summary(self, result: SetResult) -> str:
        mean = result.mean()
        if not mean["items"]:
            return result.summary()
        if result.name == "vimeo90k":
            lpips = "n/a" if mean["lpips"] is None else str(mean["lpips"])
            return f"{mean['psnr']} {mean['ssim']} {lpips}"
        lpips = _lpips_text(mean["lpips"], "<23.16f", "<23s")
        return f"\n{'Average: ':<15s}{mean['psnr']:<20.16f}{mean['ssim']:<23.16f}{lpips}"


PROJECT = ProjectLayout()
PUBLISHED = PublishedLayout()
LAYOUTS: dict[str, OutputLayout] = {PROJECT.name: PROJECT, PUBLISHED.name: PUBLISHED}
