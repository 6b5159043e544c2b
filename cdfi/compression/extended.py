"""The extended version's scripts (``extended_version/pruning.py``, ``get_sparsity_report.py``): their
published flags, their run folder ``model_weights/<uid>``, the published pruning run's per-epoch
behaviour and the published sparsity report.

Both published scripts take every flag of the published ``train.py`` (:func:`add_published_flags`),
whose argument parsing makes the run folder unless ``--inactive`` is given:

* ``--uid U``: ``./model_weights/U``; without it a random number ``N`` (printed) and the folder
  ``./model_weights/N-<Day-Mon-DD-HH-MM>``;
* ``args.txt`` (the parsed flags) and ``log.txt`` (what the run prints); with ``--force`` an existing
  folder is taken over, after copying ``log.txt``/``args.txt`` to ``log.txt.bk<m>``/``args.txt.bk<m>``
  (the first free m of 1..9). Here an occupied folder without ``--force`` is refused before anything
  is written (the published check looks for a ``best.pth`` that its pruning never writes).

:class:`PublishedRun` adds the published trainer's per-epoch behaviour to :func:`cdfi.compression.pruning.prune`:
a Middlebury test before training and after every epoch, its predictions in
``results/<sequence>/<NNN>.png`` (NNN the epoch counter, which starts at 1, so ``001`` is the
unpruned model), its rows in ``log.txt``; ``checkpoints/model_epoch_<NNN>.pth`` whenever the mean PSNR
beats the best so far; ``checkpoints/real_time.pth`` (the resumable state) every 100 steps; a training
line every 100 batches; the model density after every epoch.

:func:`published_sparsity_report` prints the parameter count and the published table
(``cdfi.compression.report.format_published_table``); with a run folder it also keeps the table in
``log.txt`` and writes ``sparsity.csv`` (``compress.py --report`` reads it) and ``sparsity.png``.
"""

from __future__ import annotations

import argparse
import datetime
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from cdfi.compression.densities import LayerDensity, conv_densities, model_density
from cdfi.compression.pruning import PruneError, PruneHooks
from cdfi.compression.report import format_published_table, plot_densities, report_csv_text
from cdfi.evaluation.layout import PublishedLayout
from cdfi.evaluation.protocol import evaluate_items
from cdfi.io.atomic import OutputExistsError, atomic_write_text
from cdfi.io.checkpoint import load_model, save_checkpoint
from cdfi.runtime import Runtime, add_runtime_arguments
from cdfi.training.losses import PUBLISHED_LOSS
from cdfi.training.trainer import Trainer
from datasets.benchmark_sets import MIDDLEBURY_SEQUENCES, BenchmarkItem

__all__ = [
    "PUBLISHED_OPTIMIZERS",
    "REPORT_FILES",
    "RUN_FILES",
    "PublishedRun",
    "RunFolder",
    "add_published_flags",
    "middlebury_test_items",
    "parse_flag_bool",
    "published_sparsity_report",
]

RUN_FILES = ("log.txt", "args.txt")
BACKUPS = 9
PUBLISHED_OPTIMIZERS = ("SGD", "ADAM", "RMSprop", "ADAMax", "OBProxSG")
REPORT_FILES = ("sparsity.csv", "sparsity.png")


def parse_flag_bool(text: str) -> bool:
    """``--use_cudnn``: true/false, yes/no, 1/0 (the published ``type=bool`` takes any non-empty text as true)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_published_flags(parser: argparse.ArgumentParser, *, runtime: bool) -> None:
    """Every flag of the published ``train.py``, with its defaults, as the extended version's scripts take
    them. ``runtime`` adds the runtime flags (``--gpu_id`` with ``--device``, ``--precision``,
    ``--threads``); without it ``--gpu_id`` is accepted and unused, as in the published report."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="cdfi_adacof", help="model family (published default: cdfi_adacof)")
    g.add_argument("--kernel_size", type=int, default=11, help="AdaCoF kernel size F (published default: 11)")
    g.add_argument("--dilation", type=int, default=2, help="AdaCoF dilation D (published default: 2)")
    g.add_argument("--checkpoint", default=None, help="the trained (or pruned) checkpoint to load")
    if runtime:
        add_runtime_arguments(parser, precision_default="fp32")
    else:
        parser.add_argument("--gpu_id", type=int, help="accepted; the report runs on the CPU, as published")
    g = parser.add_argument_group("published folders and run")
    g.add_argument(
        "--use_cudnn",
        type=parse_flag_bool,
        default=True,
        help="cudnn.benchmark on (published default: true; unused with --inactive)",
    )
    g.add_argument("--data_dir", default="./vimeo_triplet/", help="Vimeo-90K triplet folder (tri_trainlist.txt)")
    g.add_argument("--uid", default=None, help="run folder model_weights/<uid> (default: a random number and the time)")
    g.add_argument(
        "--force", action="store_true", help="take over the run folder of --uid (backs up log.txt, args.txt)"
    )
    g.add_argument("--test_input", default="./test_data/middlebury_others/input", help="Middlebury input folder")
    g.add_argument("--test_gt", default="./test_data/middlebury_others/gt", help="Middlebury ground-truth folder")
    g.add_argument(
        "--inactive", action="store_true", default=None, help="make no run folder (no args.txt, log.txt): print only"
    )
    g = parser.add_argument_group("learning (published train.py)")
    g.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="the epoch counter's end: it starts at 1, so E trains E-1 epochs (published default: 100)",
    )
    g.add_argument("--batch_size", type=int, default=8, help="batch size (published default: 8)")
    g.add_argument(
        "--loss",
        default=None,
        help=f"loss string (published default: {PUBLISHED_LOSS}; without VGG16 weights here its VGG term is "
        "dropped with a note)",
    )
    g.add_argument(
        "--num_training_samples",
        type=int,
        default=-1,
        help="train on this many random triplets (all when fewer, or when <= 0: the published default -1)",
    )
    g.add_argument("--lr", type=float, default=0.001, help="learning rate (published default: 0.001)")
    g.add_argument("--lr_decay", type=int, default=20, help="learning rate decay per N epochs (published: 20)")
    g.add_argument("--decay_type", default="step", help="learning rate decay type: step, step_E1_E2..., none")
    g.add_argument("--gamma", type=float, default=0.5, help="learning rate decay factor (published: 0.5)")
    g.add_argument(
        "--optimizer",
        default="ADAMax",
        choices=PUBLISHED_OPTIMIZERS,
        help="optimizer (published choices; pruning.py prunes with OBProxSG only)",
    )
    g.add_argument("--weight_decay", type=float, default=0.0, help="weight decay (not used by OBProxSG, as published)")
    g.add_argument("--lambda_", type=float, default=1e-4, help="l1 weight of OBProxSG (published default: 1e-4)")
    g.add_argument("--Np", type=int, default=5, help="epochs of proximal steps in OBProxSG (published default: 5)")


class RunFolder:
    """``model_weights/<uid>``: its ``args.txt`` and ``log.txt``, the ``--force`` policy and backups.

    ``outputs`` are further files of the run that count as occupying the folder (the report's CSV/PNG).
    """

    def __init__(self, root: str | Path, force: bool = False, outputs: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.force = force
        self.outputs = tuple(outputs)

    @classmethod
    def for_uid(
        cls, uid: str | None, force: bool = False, base: str | Path = "model_weights", outputs: Sequence[str] = ()
    ) -> RunFolder:
        """The folder of ``--uid`` under ``base``; without a uid, a random one with a timestamp (printed)."""
        if uid is None:
            number = random.randrange(100_000)
            print(f"revise the unique id to a random number {number}")
            stamp = datetime.datetime.now().strftime("%a-%b-%d-%H-%M")
            return cls(Path(base) / f"{number}-{stamp}", force, outputs)
        if not uid or "/" in uid or "\\" in uid or uid in (".", ".."):
            raise PruneError(f"--uid {uid!r}: must be a plain folder name")
        return cls(Path(base) / uid, force, outputs)

    @property
    def uid(self) -> str:
        return self.root.name

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    def occupied(self) -> list[str]:
        """The run files already in the folder."""
        return [name for name in (*RUN_FILES, *self.outputs) if (self.root / name).exists()]

    def check(self) -> None:
        """Refuse an occupied folder without ``force`` (``FileExistsError``, exit 2); nothing is written."""
        if self.root.exists() and not self.root.is_dir():
            raise PruneError(f"{self.root}: is a file, not a run folder; choose another --uid")
        present = self.occupied()
        if present and not self.force:
            raise OutputExistsError(
                f"{self.root}: already holds a run ({', '.join(present)}); pass --force to take it over "
                f"(log.txt and args.txt are backed up) or choose another --uid"
            )

    def create(self, args_text: str) -> None:
        """Back up an existing run's files (with ``force``), then write ``args.txt`` and an empty ``log.txt``."""
        self.check()
        if self.occupied():
            print(f"override this uid {self.uid}")
            self._back_up()
        self.root.mkdir(parents=True, exist_ok=True)
        print(args_text)
        atomic_write_text(self.root / "args.txt", args_text + "\n", force=True)
        atomic_write_text(self.log_path, "", force=True)

    def _back_up(self) -> None:
        for m in range(1, BACKUPS + 1):
            if not (self.root / f"log.txt.bk{m}").exists():
                for name in RUN_FILES:
                    if (self.root / name).exists():
                        shutil.copy2(self.root / name, self.root / f"{name}.bk{m}")
                return
        print(f"note: {self.root}: all {BACKUPS} backup slots are used; the old log.txt is not kept", file=sys.stderr)

    def log(self, line: str) -> None:
        """Print ``line`` and append it to ``log.txt``."""
        print(line, flush=True)
        with self.log_path.open("a") as f:
            print(line, file=f)


def middlebury_test_items(input_dir: str | Path, gt_dir: str | Path) -> list[BenchmarkItem]:
    """The 12 Middlebury "other" triplets from the published ``--test_input``/``--test_gt`` folders
    (``<input>/<seq>/frame10.png``, ``frame11.png``, ``<gt>/<seq>/frame10i11.png``)."""
    for flag, folder in (("--test_input", input_dir), ("--test_gt", gt_dir)):
        if not Path(folder).is_dir():
            raise PruneError(f"{flag} {folder}: Middlebury folder not found (run test_data/download.py)")
    input_dir, gt_dir = Path(input_dir), Path(gt_dir)
    return [
        BenchmarkItem(
            seq,
            input_dir / seq / "frame10.png",
            input_dir / seq / "frame11.png",
            gt_dir / seq / "frame10i11.png",
            "frame10i11.png",
        )
        for seq in MIDDLEBURY_SEQUENCES
    ]


class _EpochOutputs(PublishedLayout):
    """The published trainer's test files, ``<results>/<seq>/<NNN>.png``, with the published rows."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def output_path(self, set_dir: Path, key: str, item: BenchmarkItem, index: int) -> Path:
        return set_dir / item.name / f"{self.tag}.png"


class PublishedRun(PruneHooks):
    """The published pruning run's folder and per-epoch behaviour (see the module docstring).

    ``total_epochs`` is the published ``--epochs`` (the counter's end), shown in the training lines.
    """

    def __init__(
        self,
        folder: RunFolder,
        args_text: str,
        test_items: Sequence[BenchmarkItem],
        runtime: Runtime,
        total_epochs: int,
        *,
        lpips_model: nn.Module | None = None,
        log_every: int = 100,
    ) -> None:
        self.folder = folder
        self.args_text = args_text
        self.test_items = list(test_items)
        self.runtime = runtime
        self.total_epochs = total_epochs
        self.lpips_model = lpips_model
        self.log_every = log_every
        self.best_psnr = float("-inf")
        self.best_checkpoint: Path | None = None

    @property
    def results_dir(self) -> Path:
        return self.folder.root / "results"

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder.root / "checkpoints"

    def check(self) -> None:
        self.folder.check()

    def test(self, model: nn.Module, counter: int) -> float | None:
        """Middlebury rows and average into ``log.txt``; predictions as ``results/<seq>/<counter:03d>.png``."""
        layout = _EpochOutputs(f"{counter:03d}")
        for line in layout.header("middlebury"):
            print(line)
        result = evaluate_items(
            model,
            self.test_items,
            self.results_dir,
            name="middlebury",
            runtime=self.runtime,
            lpips_model=self.lpips_model,
            progress=False,
            print_rows=False,
            layout=layout,
        )
        for index, row in enumerate(result.rows):
            self.folder.log(layout.row("middlebury", index, row))
        self.folder.log(layout.summary(result))
        return result.mean()["psnr"]

    def begin(self, trainer: Trainer) -> None:
        self.folder.create(self.args_text)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        print(f"# of model parameters is: {params}")
        psnr = self.test(trainer.model, trainer.epoch + 1)
        self.best_psnr = psnr if psnr is not None else float("-inf")

    def on_step(self, trainer: Trainer, parts: dict[str, float]) -> None:
        batch = trainer.epoch_step - 1
        if batch % self.log_every == 0:
            self.folder.log(
                f"{'Train Epoch: ':<13s}{f'[{trainer.epoch + 1}/{self.total_epochs}]':<14s}{'Step: ':<6s}"
                f"{f'[{batch}/{len(trainer.loader)}]':<16s}{'train loss: ':<12s}{parts['loss']:<20.16f}"
            )

    def on_epoch_end(self, trainer: Trainer) -> None:
        counter = trainer.epoch + 1
        self.folder.log(f"===== current lr: {trainer.optimizer.param_groups[0]['lr']:f} =====")
        self.folder.log("Testing...")
        psnr = self.test(trainer.model, counter)
        if psnr is not None and psnr > self.best_psnr:
            self.best_psnr = psnr
            self.best_checkpoint = self.checkpoint_dir / f"model_epoch_{counter:03d}.pth"
            save_checkpoint(self.best_checkpoint, trainer.model, counter)
        print(f"************* Model density: {model_density(trainer.model):.7f} *************", flush=True)

    def end(self, trainer: Trainer, out: Path) -> None:
        best = f"; best Middlebury PSNR in {self.best_checkpoint}" if self.best_checkpoint else ""
        print(f"pruned model: {out}{best}", flush=True)


def published_sparsity_report(
    checkpoint: str | Path,
    model: str,
    kernel_size: int,
    dilation: int,
    folder: RunFolder | None = None,
    args_text: str = "",
) -> list[LayerDensity]:
    """The published report: the checkpoint must hold ``model`` F``kernel_size``/D``dilation`` (else a
    one-line ``ValueError``); prints the parameter count and :func:`format_published_table`. With a run
    ``folder`` (no ``--inactive``) also writes ``args.txt``, the table as ``log.txt``, ``sparsity.csv``
    and ``sparsity.png`` there, after every check has passed."""
    network = load_model(checkpoint, model, kernel_size, dilation)
    if folder is not None:
        folder.check()
    layers = conv_densities(network.state_dict())
    table = format_published_table(layers)
    if folder is not None:
        folder.create(args_text)
    params = sum(p.numel() for p in network.parameters() if p.requires_grad)
    lines = [f"# of model parameters is: {params}", table]
    if folder is None:
        print("\n".join(lines), flush=True)
        return layers
    for line in lines:
        folder.log(line)
    atomic_write_text(folder.root / REPORT_FILES[0], report_csv_text(layers), force=True)
    plot_densities(layers, folder.root / REPORT_FILES[1], f"{Path(checkpoint).name}: per-layer density", True)
    return layers
