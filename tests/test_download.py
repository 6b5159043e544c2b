"""test_data/download.py against archives served from a loopback HTTP server (no internet needed)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
UCF_SUBSET = ("1", "11")


def _load_download(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import test_data/download.py (not a package) under a private name."""
    name = "cdfi_test_data_download"
    spec = importlib.util.spec_from_file_location(name, REPO / "test_data" / "download.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture()
def download(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, limited to two UCF101 folders so that small archives suffice."""
    module = _load_download(monkeypatch)
    monkeypatch.setattr(module, "UCF101_FOLDERS", UCF_SUBSET)
    return module


def _zip(path: Path, members: dict[str, Path | bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, content in members.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)


@pytest.fixture()
def archives(data_root: Path, tmp_path: Path) -> Path:
    """The three public archives rebuilt from the shared copy, with the upstream folder names and extras."""
    folder = tmp_path / "served"
    folder.mkdir()
    midd = data_root / "middlebury_others"
    seqs = sorted(p.name for p in (midd / "input").iterdir())
    data = {f"other-data/{s}/frame{i}.png": midd / "input" / s / f"frame{i}.png" for s in seqs for i in (10, 11)}
    _zip(folder / "other-color-twoframes.zip", data)
    _zip(
        folder / "other-gt-interp.zip",
        {f"other-gt-interp/{s}/frame10i11.png": midd / "gt" / s / "frame10i11.png" for s in seqs},
    )
    ucf = data_root / "ucf101_interp_ours"
    members: dict[str, Path | bytes] = {}
    for n in UCF_SUBSET:
        for name in ("frame_00.png", "frame_01_gt.png", "frame_02.png"):
            members[f"UCF101_results/ucf101_interp_ours/{n}/{name}"] = ucf / n / name
        members[f"UCF101_results/ucf101_interp_ours/{n}/frame_01_ours.png"] = b"another method's result"
        members[f"UCF101_results/ucf101_sepconv/{n}/frame_01_gt.png"] = b"not the ground truth"
    _zip(folder / "UCF101_results.zip", members)
    return folder


@pytest.fixture()
def server(archives: Path) -> Iterator[str]:
    """Serve ``archives`` on 127.0.0.1 at a free port."""
    handler = functools.partial(_QuietHandler, directory=str(archives))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloads_arranges_and_verifies(
    download: ModuleType, server: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    assert download.main(["--dest", str(dest), "--mirror", server, "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "middlebury: " in out and "ucf101: " in out and "checksums verified" in out
    arranged = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    expected = sorted(
        [
            f"middlebury_others/{p.relative_to(data_root / 'middlebury_others').as_posix()}"
            for p in (data_root / "middlebury_others").rglob("*.png")
        ]
        + [
            f"ucf101_interp_ours/{n}/{name}"
            for n in UCF_SUBSET
            for name in ("frame_00.png", "frame_01_gt.png", "frame_02.png")
        ]
    )
    assert arranged == expected
    assert all(_digest(dest / rel) == _digest(data_root / rel) for rel in arranged)

    assert download.main(["--dest", str(dest), "--mirror", server, "--sets", "ucf101", "--no_progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]


def test_checksum_mismatch_leaves_nothing_behind(
    download: ModuleType,
    archives: Path,
    server: str,
    data_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gt = data_root / "middlebury_others" / "gt"
    recoded = tmp_path / "Venus.png"
    Image.open(gt / "Venus" / "frame10i11.png").save(recoded, compress_level=1)
    members: dict[str, Path | bytes] = {
        f"other-gt-interp/{s.name}/frame10i11.png": s / "frame10i11.png" for s in gt.iterdir()
    }
    members["other-gt-interp/Venus/frame10i11.png"] = recoded
    _zip(archives / "other-gt-interp.zip", members)
    dest = tmp_path / "dest"
    assert download.main(["--dest", str(dest), "--mirror", server, "--sets", "middlebury", "--no_progress"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("downloading ")]
    assert len(err) == 1 and "checksum mismatch for 1 file" in err[0] and "gt/Venus/frame10i11.png" in err[0]
    assert not (dest / "middlebury_others").exists()
    assert [p.name for p in dest.iterdir() if p.name != ".downloads"] == []


def test_http_failure_is_one_clear_line(
    download: ModuleType, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    assert (
        download.main(["--dest", str(dest), "--mirror", f"{server}/missing", "--sets", "middlebury", "--no_progress"])
        == 1
    )
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("downloading ")]
    assert len(err) == 1 and "HTTP 404" in err[0] and f"{server}/missing/other-color-twoframes.zip" in err[0]
    assert not (dest / "middlebury_others").exists()


def test_local_archives_need_no_network(download: ModuleType, archives: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    rc = download.main(
        [
            "--dest",
            str(dest),
            "--archive_dir",
            str(archives),
            "--mirror",
            "http://127.0.0.1:9",
            "--sets",
            "middlebury",
            "--no_progress",
        ]
    )
    assert rc == 0
    assert (dest / "middlebury_others" / "gt" / "Walking" / "frame10i11.png").is_file()
