"""checkpoints/download.py and cdfi.io.download against loopback HTTP servers and files made here."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from cdfi.io.download import DownloadError, download, git_blob_id

REPO = Path(__file__).resolve().parent.parent
CDFI_PATH = "tding1/CDFI/main/checkpoints"
ADACOF_PATH = "HyeongminLEE/AdaCoF-pytorch/master/checkpoint/kernelsize_11"


def _blob(data: bytes) -> str:
    """Independent statement of git's rule, for bytes held in memory."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\x00" + data).hexdigest()


def _payload(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed * 13 + i // 251) % 256 for i in range(size))


@dataclass
class Served:
    """Files served at URL paths, and a log of (path, Range header) per request."""

    files: dict[str, bytes]
    ranges: bool = True
    drops: int = 0  # how many requests are cut off after ``drop_at`` bytes
    drop_at: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output clean."""

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            served.requests.append((self.path, rng))
            data = served.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and served.ranges:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.drops > 0:
                served.drops -= 1
                self.wfile.write(body[: served.drop_at])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def serve() -> Iterator:
    """``serve(Served(...))`` -> base URL of a server on 127.0.0.1; all stopped at the end."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(served: Served) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def fetcher(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """checkpoints/download.py as a module (it is a script, not a package)."""
    name = "cdfi_checkpoints_download"
    spec = importlib.util.spec_from_file_location(name, REPO / "checkpoints" / "download.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def table(fetcher: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Replace the published table by three small files made here (blob ids of these bytes)."""
    files = {"a": _payload(300_000, 1), "b": _payload(5_000, 2)}
    config = b"2019-09-20-09:55:47\n\nmodel: adc\nkernel_size: 9\n\n2019-09-23-16:30:39\n\nkernel_size: 11\n\n"
    weights = {
        "a": fetcher._cdfi("a", _blob(files["a"])),
        "b": fetcher._cdfi("b", _blob(files["b"])),
        "adacof_pytorch_kernelsize_11": fetcher._adacof(11, _blob(files["b"])),
    }
    monkeypatch.setattr(fetcher, "WEIGHTS", weights)
    return {
        f"/{CDFI_PATH}/a.pth": files["a"],
        f"/{CDFI_PATH}/b.pth": files["b"],
        f"/{ADACOF_PATH}/ckpt.pth": files["b"],
        f"/{ADACOF_PATH}/config.txt": config,
    }


def _run(fetcher: ModuleType, base: str, dest: Path, *names: str) -> int:
    return fetcher.main([*names, "--dest", str(dest), "--base_url", base, "--no_progress"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git as the reference")
def test_git_blob_id_matches_git_hash_object(tmp_path: Path) -> None:
    for k, data in enumerate([b"", b"hello\n", _payload(70_000, 3), b"\x00" * 2_000_001]):
        path = tmp_path / f"f{k}"
        path.write_bytes(data)
        ref = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert git_blob_id(path) == ref.stdout.strip() == _blob(data)


def test_published_table_is_well_formed(fetcher: ModuleType) -> None:
    names = list(fetcher.WEIGHTS)
    assert {w.name for w in fetcher.select([])} == {
        "CDFI_adacof",
        "compressed_adacof_F_5_D_1",
        "compressed_adacof_F_11_D_2",
        "adacof_F_5_D_1",
        "adacof_pruned_lr_1e-2_lam_1e-4_Np_10",
    }
    assert len(fetcher.select(["all"])) == len(names) == 7
    for w in fetcher.WEIGHTS.values():
        assert len(w.blob) == 40 and int(w.blob, 16) >= 0
    same = fetcher.WEIGHTS["adacof_pytorch_kernelsize_5"].blob == fetcher.WEIGHTS["adacof_F_5_D_1"].blob
    assert same
    url = fetcher.WEIGHTS["CDFI_adacof"].url(fetcher.RAW_BASE)
    assert url == "https://raw.githubusercontent.com/tding1/CDFI/main/checkpoints/CDFI_adacof.pth"


def test_list_prints_names_blob_ids_and_urls(fetcher: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetcher.main(["--list"]) == 0
    out = capsys.readouterr().out
    for w in fetcher.WEIGHTS.values():
        assert w.name in out and w.blob in out and w.url(fetcher.RAW_BASE) in out
    assert "kernelsize_11/config.txt" in out


def test_right_blob_id_puts_file_in_place(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve(Served(dict(table), ranges=False))
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a", "b.pth") == 0
    assert (dest / "a.pth").read_bytes() == table[f"/{CDFI_PATH}/a.pth"]
    assert (dest / "b.pth").read_bytes() == table[f"/{CDFI_PATH}/b.pth"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.pth", "b.pth"]  # no partial files left
    assert capsys.readouterr().out.count("downloaded, git blob id") == 2


def test_wrong_blob_id_leaves_nothing_and_keeps_existing_files(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = dict(table)
    served[f"/{CDFI_PATH}/a.pth"] = b"corrupted" + table[f"/{CDFI_PATH}/a.pth"][9:]
    base = serve(Served(served))
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "git blob id" in err[0] and "not the published" in err[0] and "removed" in err[0]
    assert not dest.exists()  # the folder it made is empty again, so it is gone too
    dest.mkdir()

    # a good file of another name stays; an existing file of this name is only replaced with --force,
    # and a bad download never replaces it
    (dest / "b.pth").write_bytes(table[f"/{CDFI_PATH}/b.pth"])
    (dest / "a.pth").write_bytes(b"someone's own weights")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.iterdir()}
    assert _run(fetcher, base, dest, "a", "b") == 1
    captured = capsys.readouterr()
    assert "--force" in captured.err and "b.pth: already present" in captured.out
    assert _run(fetcher, base, dest, "a", "--force") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the published" in err[0] and "untouched" in err[0]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.iterdir()} == before


def test_existing_good_file_is_skipped_without_a_request(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(dict(table))
    base = serve(served)
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / "a.pth").write_bytes(table[f"/{CDFI_PATH}/a.pth"])
    mtime = (dest / "a.pth").stat().st_mtime_ns
    assert _run(fetcher, base, dest, "a", "--force") == 0
    assert served.requests == []
    assert "already present with the published blob id" in capsys.readouterr().out
    assert (dest / "a.pth").stat().st_mtime_ns == mtime


def test_dropped_connection_resumes_with_range(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path
) -> None:
    served = Served(dict(table), ranges=True, drops=1, drop_at=100_000)
    base = serve(served)
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a") == 0
    assert (dest / "a.pth").read_bytes() == table[f"/{CDFI_PATH}/a.pth"]
    assert [r for _, r in served.requests] == [None, "bytes=100000-"]


def test_dropped_connection_without_range_support_restarts_cleanly(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path
) -> None:
    served = Served(dict(table), ranges=False, drops=1, drop_at=100_000)
    base = serve(served)
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a") == 0
    assert (dest / "a.pth").read_bytes() == table[f"/{CDFI_PATH}/a.pth"]
    assert len(served.requests) == 2


def test_interrupted_run_is_resumed_by_the_next_one(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(dict(table), ranges=True, drops=3, drop_at=50_000)
    base = serve(served)
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a") == 1  # three attempts, each cut off
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "run again to resume" in err[0]
    part = dest / ".a.pth.part"
    assert not (dest / "a.pth").exists() and part.stat().st_size == 150_000
    served.requests.clear()
    part.write_bytes(part.read_bytes()[:120_000])  # as if cut off earlier
    assert _run(fetcher, base, dest, "a") == 0
    assert served.requests == [(f"/{CDFI_PATH}/a.pth", "bytes=120000-")]
    assert (dest / "a.pth").read_bytes() == table[f"/{CDFI_PATH}/a.pth"] and not part.exists()


def test_stale_partial_file_is_restarted(fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path) -> None:
    base = serve(Served(dict(table)))
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / ".a.pth.part").write_bytes(b"x" * 1000)  # not a prefix of the file: resuming gives wrong bytes
    assert _run(fetcher, base, dest, "a") == 0
    assert (dest / "a.pth").read_bytes() == table[f"/{CDFI_PATH}/a.pth"]
    (dest / ".b.pth.part").write_bytes(b"y" * 9000)  # longer than the file: the server answers 416
    assert _run(fetcher, base, dest, "b") == 0
    assert (dest / "b.pth").read_bytes() == table[f"/{CDFI_PATH}/b.pth"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.pth", "b.pth"]


def test_unreachable_server_prints_one_instruction_line_per_file(
    fetcher: ModuleType, table: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "a", "adacof_pytorch_kernelsize_11") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    targets = [dest / "a.pth", dest / "adacof_pytorch_kernelsize_11" / "ckpt.pth"]
    targets.append(dest / "adacof_pytorch_kernelsize_11" / "config.txt")
    for line, target, path in zip(
        err, targets, [f"{CDFI_PATH}/a.pth", f"{ADACOF_PATH}/ckpt.pth", f"{ADACOF_PATH}/config.txt"], strict=True
    ):
        assert f"fetch {base}/{path} by hand" in line and line.endswith(f"save it as {target}")
    assert not dest.exists() or not any(dest.rglob("*"))


def test_http_error_is_one_line(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve(Served({}))
    assert _run(fetcher, base, tmp_path / "ckpt", "a") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HTTP 404" in err[0] and f"{base}/{CDFI_PATH}/a.pth" in err[0]


def test_adacof_pytorch_file_comes_with_its_config(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve(Served(dict(table)))
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "adacof_pytorch_kernelsize_11") == 0
    folder = dest / "adacof_pytorch_kernelsize_11"
    assert (folder / "ckpt.pth").read_bytes() == table[f"/{ADACOF_PATH}/ckpt.pth"]
    assert (folder / "config.txt").read_bytes() == table[f"/{ADACOF_PATH}/config.txt"]
    assert "kernel_size 11 / dilation 1 verified" in capsys.readouterr().out
    assert _run(fetcher, base, dest, "adacof_pytorch_kernelsize_11") == 0
    assert capsys.readouterr().out.count("already present") == 2


def test_config_with_other_sizes_is_refused(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = dict(table)
    served[f"/{ADACOF_PATH}/config.txt"] = b"kernel_size: 11\ndilation: 2\n"
    base = serve(Served(served))
    dest = tmp_path / "ckpt"
    assert _run(fetcher, base, dest, "adacof_pytorch_kernelsize_11") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.txt" in err[0] and "(11, 2)" in err[0]
    assert sorted(p.name for p in (dest / "adacof_pytorch_kernelsize_11").iterdir()) == ["ckpt.pth"]


def test_same_blob_is_copied_from_the_file_already_here(
    fetcher: ModuleType, table: dict[str, bytes], serve, tmp_path: Path
) -> None:
    served = Served(dict(table))
    base = serve(served)
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / "b.pth").write_bytes(table[f"/{CDFI_PATH}/b.pth"])
    assert _run(fetcher, base, dest, "adacof_pytorch_kernelsize_11") == 0
    assert [p for p, _ in served.requests] == [f"/{ADACOF_PATH}/config.txt"]
    assert (dest / "adacof_pytorch_kernelsize_11" / "ckpt.pth").read_bytes() == table[f"/{CDFI_PATH}/b.pth"]


def test_git_lfs_pointer_is_followed_to_the_media_url(
    fetcher: ModuleType, serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _payload(50_000, 5)
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(content).hexdigest()}\nsize {len(content)}\n"
    ).encode()
    monkeypatch.setattr(fetcher, "WEIGHTS", {"a": fetcher._cdfi("a", _blob(pointer))})
    served = {f"/{CDFI_PATH}/a.pth": pointer, f"/media/{CDFI_PATH}/a.pth": content}
    dest = tmp_path / "ckpt"
    assert _run(fetcher, serve(Served(served)), dest, "a") == 0
    assert (dest / "a.pth").read_bytes() == content
    served[f"/media/{CDFI_PATH}/a.pth"] = content[:-1] + b"!"
    (dest / "a.pth").unlink()
    assert _run(fetcher, serve(Served(served)), dest, "a") == 1
    assert list(dest.iterdir()) == []


def test_unknown_name_is_refused(fetcher: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetcher.main(["nope"]) == 2
    assert "unknown weights 'nope'" in capsys.readouterr().err


def test_download_library_reports_unreachable(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{_closed_port()}/x", tmp_path / ".x.part", progress=False)
    assert info.value.unreachable and "\n" not in str(info.value)
    assert not (tmp_path / ".x.part").exists()
