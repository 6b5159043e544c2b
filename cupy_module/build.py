"""Build and load the compiled AdaCoF warp libraries (C ABI, loaded with ctypes).

The CPU kernel is plain C++ with OpenMP and no PyTorch headers, so it compiles in about a second with the
system C++ compiler. Builds are cached under the repository's ignored ``build/`` folder (or
``$CDFI_BUILD_DIR``), keyed by a hash of the source, the flags, the compiler and the CPU, so a cache
carried to another machine is rebuilt rather than run with the wrong instruction set. A build happens
on first use; ``python -m cupy_module`` does it ahead of time (install step, CI).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
CPU_SOURCE = KERNEL_DIR / "adacof_cpu.cpp"
CUDA_SOURCE = KERNEL_DIR / "adacof_cuda.cu"
SHIM_SOURCE = KERNEL_DIR / "host_shim.cpp"

CPU_FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-std=c++17", "-fPIC", "-shared")
SHIM_FLAGS = ("-O1", "-std=c++17", "-fPIC", "-shared", "-Wno-unknown-pragmas")


class BuildError(RuntimeError):
    """The C++ compiler is missing or failed; the message says which and how."""


def build_dir() -> Path:
    """Cache folder for compiled libraries: ``$CDFI_BUILD_DIR`` or ``<repo>/build/cupy_module``."""
    env = os.environ.get("CDFI_BUILD_DIR")
    if env:
        return Path(env) / "cupy_module"
    return Path(__file__).resolve().parents[1] / "build" / "cupy_module"


def find_compiler() -> str:
    """Path of the C++ compiler: ``$CXX``, else ``g++``, else ``c++``."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    raise BuildError("no C++ compiler found (set CXX or install g++)")


def _machine_tag() -> str:
    """What decides whether a -march=native binary runs here: architecture and CPU feature flags."""
    tag = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    tag += line
                    break
    except OSError:
        tag += platform.processor()
    return tag


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"C++ compiler {cxx} does not run: {exc}") from exc


def _umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_shareable(path: Path, only_add: bool = False) -> None:
    """Give a library the mode a plain compiler run would (0755 under umask 022), best effort.

    The build goes through ``mkstemp`` (mode 0600) and the linker only adds execute bits, which left
    0711 libraries that other users cannot load. With ``only_add`` (a cached library) bits are only
    added, never removed. Only files of this user are changed.
    """
    mode = 0o777 & ~_umask()
    try:
        st = path.stat()
        if only_add:
            mode |= st.st_mode & 0o777
        if st.st_uid == os.getuid() and (st.st_mode & 0o777) != mode:
            path.chmod(mode)
    except OSError:
        pass


def compile_library(
    source: Path, name: str, flags: tuple[str, ...], openmp: bool, depends: tuple[Path, ...] = ()
) -> Path:
    """Compile ``source`` (which includes ``depends``) into a cached shared library; return its path.

    With ``openmp`` it first tries ``-fopenmp`` and, if that fails, builds single-threaded. The
    library is written to a temporary name and renamed, so concurrent builds never see half a file.
    """
    cxx = find_compiler()
    text = b"".join(p.read_bytes() for p in (source, *depends))
    version = _compiler_version(cxx)
    attempts = [(*flags, "-fopenmp"), flags] if openmp else [flags]
    errors = []
    for attempt in attempts:
        key = hashlib.sha256(
            b"\0".join([text, " ".join(attempt).encode(), cxx.encode(), version.encode(), _machine_tag().encode()])
        ).hexdigest()[:16]
        target = build_dir() / f"{name}-{key}.so"
        if target.exists():
            _make_shareable(target, only_add=True)  # libraries cached by earlier versions were 0711
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cxx, *attempt, "-o", tmp, str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=source.parent)
        if proc.returncode == 0:
            _make_shareable(Path(tmp))
            os.replace(tmp, target)
            return target
        Path(tmp).unlink(missing_ok=True)
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    raise BuildError("compiling " + source.name + " failed: " + "; ".join(errors))


@cache
def cpu_library() -> ctypes.CDLL:
    """The compiled CPU warp (built on first call); raises BuildError when it cannot be built."""
    path = compile_library(CPU_SOURCE, "adacof_cpu", CPU_FLAGS, openmp=True)
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise BuildError(f"cannot load {path}: {exc}") from exc


@cache
def shim_library() -> ctypes.CDLL:
    """The CUDA kernels compiled for the host through host_shim.cpp (tests only)."""
    path = compile_library(SHIM_SOURCE, "adacof_shim", SHIM_FLAGS, openmp=False, depends=(CUDA_SOURCE,))
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise BuildError(f"cannot load {path}: {exc}") from exc


def main() -> int:
    """Build the CPU warp library ahead of time; exit status 1 (one line on stderr) on failure."""
    try:
        cpu_library()
    except BuildError as exc:
        print(f"cupy_module.build: {exc}; the warp will use the slow PyTorch reference", file=sys.stderr)
        return 1
    print(f"cupy_module.build: CPU warp library ready in {build_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
