"""Shared fixtures: locations of the shared data beside the checkout, small seeded frames."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared folder: ``$CDFI_SHARED`` or ``../shared`` beside the checkout."""
    return Path(os.environ.get("CDFI_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def official_layout() -> dict:
    import json

    path = shared_dir() / "reference" / "official_layout.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (set CDFI_SHARED)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("CDFI_DATA_ROOT", shared_dir() / "test_data"))
    if not (root / "middlebury_others").is_dir():
        pytest.skip(f"evaluation data not found under {root} (set CDFI_DATA_ROOT)")
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads per test are slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
