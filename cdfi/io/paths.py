"""Where data sets and checkpoints are found when the user does not say."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
DATA_ROOT_ENV = "CDFI_DATA_ROOT"

# Published file name -> the file this project trained itself and ships instead.
PUBLISHED_CHECKPOINTS = (
    "CDFI_adacof.pth",
    "compressed_adacof_F_5_D_1.pth",
    "compressed_adacof_F_11_D_2.pth",
    "adacof_F_5_D_1.pth",
    "adacof_pruned_lr_1e-2_lam_1e-4_Np_10.pth",
)
"""The files of the official repository's ``checkpoints/`` folder (``checkpoints/download.py`` fetches them)."""

SHIPPED_CHECKPOINTS = {
    "CDFI_adacof.pth": "cdfi_adacof_ours.pth",
    "compressed_adacof_F_5_D_1.pth": "compressed_adacof_F_5_D_1_ours.pth",
    "compressed_adacof_F_11_D_2.pth": "compressed_adacof_F_11_D_2_ours.pth",
}


class MissingCheckpointError(FileNotFoundError):
    """Neither the published checkpoint nor a shipped replacement exists."""


def resolve_data_root(flag: str | Path | None = None) -> Path:
    """``--data_root`` if given, else ``$CDFI_DATA_ROOT``, else ``test_data/`` in the repository."""
    if flag:
        return Path(flag)
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    return REPO_ROOT / "test_data"


def missing_checkpoint(path: str | Path) -> str:
    """The one line for a checkpoint that is not there; for a published file name it says how to fetch it."""
    path = Path(path)
    line = f"{path}: checkpoint not found"
    if path.name in PUBLISHED_CHECKPOINTS:
        line += f"; fetch it with `make weights` (or python checkpoints/download.py {path.stem})"
    return line


def resolve_checkpoint(path: str | Path, explicit: bool = False, quiet: bool = False) -> Path:
    """The checkpoint to use for ``path``.

    A file at ``path`` wins. A path the user typed (``explicit``) must exist. Otherwise a published
    default (e.g. ``checkpoints/CDFI_adacof.pth``) falls back to the project's own shipped checkpoint,
    announced in one line on stderr.
    """
    path = Path(path)
    if path.is_file():
        return path
    if explicit:
        raise MissingCheckpointError(missing_checkpoint(path))
    shipped = SHIPPED_CHECKPOINTS.get(path.name)
    if shipped and (CHECKPOINT_DIR / shipped).is_file():
        if not quiet:
            print(
                f"note: {path} not found; using this project's own checkpoint {CHECKPOINT_DIR / shipped}",
                file=sys.stderr,
            )
        return CHECKPOINT_DIR / shipped
    raise MissingCheckpointError(
        f"{path}: checkpoint not found. Put the published file there (see checkpoints/README.md), "
        "train one with train.py, or pass --checkpoint PATH"
    )
