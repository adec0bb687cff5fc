"""llama.cpp's own tools, built from the llama.cpp vendored in the installed llama-cpp-python's sdist.

Building from that exact source makes the native peers (``llama-server``, ``llama-bench``) the same llama.cpp
version as the library our server and llama-cpp-python load, so differences are the serving layer's, not the
kernels'. The build is cached under ``~/.cache/npcserver-bench/``; a missing build is made on first use (minutes on
2 cores). The sdist comes from pip's ordinary client (``pip download --no-binary``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE = Path(os.environ.get("NPCSERVER_BENCH_CACHE", Path.home() / ".cache" / "npcserver-bench"))
TARGETS = ("llama-server", "llama-bench")


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def build_dir() -> Path:
    return CACHE / f"build-{llama_cpp_version()}"


def binary(name: str) -> Path:
    return build_dir() / "bin" / name


def ensure_native_tools() -> dict[str, Path]:
    """Returns the paths of llama-server and llama-bench, building them first when they are missing."""
    paths = {name: binary(name) for name in TARGETS}
    if all(p.is_file() for p in paths.values()):
        return paths
    source = _vendored_source()
    build = build_dir()
    log = CACHE / "build.log"
    logger.info("building %s from %s into %s (log: %s); this takes minutes", ", ".join(TARGETS), source, build, log)
    configure = [
        "cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
    ]  # fmt: skip
    if _has("ninja"):
        configure += ["-G", "Ninja"]
    compile_ = ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", *TARGETS]
    with log.open("a") as out:
        for cmd in (configure, compile_):
            subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"the build finished but these are missing: {missing}; see {log}")
    return paths


def _vendored_source() -> Path:
    version = llama_cpp_version()
    root = CACHE / f"llama_cpp_python-{version}"
    source = root / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        logger.info("downloading the llama-cpp-python %s sdist with pip", version)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(CACHE)],
            check=True,
        )  # fmt: skip
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    return source


def _has(tool: str) -> bool:
    return any((Path(d) / tool).is_file() for d in os.environ.get("PATH", "").split(os.pathsep))
