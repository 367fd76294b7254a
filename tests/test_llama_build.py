"""The llama-server build's machinery, on small stand-ins for llama.cpp: its own time bound,
progress, resuming a killed build, the lock, and no process left behind.

The functions are the real ones from `scripts/llama_server.py`; only the commands they run are
small (a Python one-liner, or a six-file cmake project), so nothing here builds llama.cpp.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_server.py"

# A build command stand-in: starts a grandchild in its own process group, writes both pids to
# argv[1], then waits for argv[2] to exist (forever, unless killed).
SPAWNER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {grandchild.pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.1)
    """
)

# A process that drives the script as a user's run would, so that the test can signal it.
DRIVER = textwrap.dedent(
    """
    import importlib.util, sys, time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("llama_server", sys.argv[1])
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    work = Path(sys.argv[2])
    deadline = time.monotonic() + 120
    try:
        with script.terminate_raises():
            if sys.argv[3] == "spawn":
                cmd = [sys.executable, "-c", sys.argv[4], str(work / "pids"), str(work / "go")]
                script.run_build_command(cmd, work / "log", deadline=deadline)
            elif sys.argv[3] == "locked":
                with script.build_lock(work / ".build.lock", deadline) as fd:
                    cmd = [sys.executable, "-c", sys.argv[4], str(work / "pids"), str(work / "go")]
                    script.run_build_command(cmd, work / "log", deadline=deadline, keep_fds=[fd])
            else:
                build = work / "build"
                script.cmake_configure(work / "src", build, (), work / "log", deadline=deadline)
                script.cmake_build(build, "tiny", 1, work / "log", deadline=deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_server_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it has exited, unreaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def start_driver(mode: str, work: Path, code: str = SPAWNER) -> subprocess.Popen[bytes]:
    """The driver, its stderr in work/driver.err."""
    with (work / "driver.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(SCRIPT), str(work), mode, code],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def spawned_pids(work: Path) -> list[int]:
    wait_until(lambda: (work / "pids").exists())
    return [int(pid) for pid in (work / "pids").read_text().split()]


@pytest.mark.slow
def test_a_build_command_runs_in_its_own_group_with_its_progress_relayed(
    script: ModuleType, tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import os, time
        print("group", os.getpgid(0), "pid", os.getpid(), flush=True)
        for percent in (7, 55, 100):
            print(f"[{percent:3d}%] Building CXX object step.o", flush=True)
            time.sleep(0.5)
        """
    )
    notes: list[str] = []
    log = tmp_path / "build.log"
    script.run_build_command(
        [sys.executable, "-c", code],
        log,
        deadline=time.monotonic() + 60,
        report=notes.append,
        interval=0.2,
    )
    words = log.read_text().split("group ", 1)[1].split()
    assert words[0] == words[2] != str(os.getpgid(0))  # a group of its own, it leads
    assert any("55%" in note or "100%" in note for note in notes), notes
    assert all(str(log) in note for note in notes)


def test_a_failing_build_command_raises_with_the_tail_of_its_log(
    script: ModuleType, tmp_path: Path
) -> None:
    code = "import sys; print('error: no member named frobnicate'); sys.exit(2)"
    with pytest.raises(script.LlamaServerError, match="exit 2") as caught:
        script.run_build_command(
            [sys.executable, "-c", code], tmp_path / "log", deadline=time.monotonic() + 60
        )
    assert "no member named frobnicate" in str(caught.value)
    assert "clean" in str(caught.value)  # how to start over


@pytest.mark.slow
def test_the_time_bound_stops_the_whole_process_group(script: ModuleType, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(script.LlamaServerError, match="timed out") as caught:
        script.run_build_command(
            [sys.executable, "-c", SPAWNER, str(tmp_path / "pids"), str(tmp_path / "go")],
            tmp_path / "log",
            deadline=started + 8,
        )
    assert time.monotonic() - started < 30
    assert "rerun to resume" in str(caught.value)
    pids = spawned_pids(tmp_path)
    assert len(pids) == 2
    assert not any(running(pid) for pid in pids)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_build_stops_its_process_group_before_exiting(
    signum: signal.Signals, tmp_path: Path
) -> None:
    driver = start_driver("spawn", tmp_path)
    try:
        pids = spawned_pids(tmp_path)
        assert all(map(running, pids))
        driver.send_signal(signum)
        driver.wait(timeout=60)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == 130, (tmp_path / "driver.err").read_text()
    assert not any(running(pid) for pid in pids)  # stopped before the driver exited


@pytest.mark.slow
def test_the_lock_outlives_a_killed_builder_until_its_build_ends(
    script: ModuleType, tmp_path: Path
) -> None:
    lock = tmp_path / ".build.lock"
    driver = start_driver("locked", tmp_path)
    try:
        command_pid, _ = spawned_pids(tmp_path)
        with (
            pytest.raises(script.LlamaServerError, match=f"pid {driver.pid}"),
            script.build_lock(lock, time.monotonic() + 0.5),
        ):
            pass
        driver.kill()  # SIGKILL: no cleanup runs, its build command is orphaned
        driver.wait()
        assert running(command_pid)
        # The orphan inherited the lock: nobody may resume into (or clean) its folders.
        with (
            pytest.raises(script.LlamaServerError, match="gave up waiting"),
            script.build_lock(lock, time.monotonic() + 0.5),
        ):
            pass
        (tmp_path / "go").touch()  # the orphaned build ends...
        with script.build_lock(lock, time.monotonic() + 60):  # ...and the lock is free
            assert lock.read_text().strip() == str(os.getpid())
    finally:
        (tmp_path / "go").touch()
        driver.kill()
        driver.wait()
        with contextlib.suppress(ProcessLookupError):  # the orphan's own child, still asleep
            os.killpg(command_pid, signal.SIGKILL)


def test_clean_removes_an_unfinished_build_unless_a_build_holds_it(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_ASYNC_CACHE", str(tmp_path))
    monkeypatch.delenv("DSPY_ASYNC_LLAMA_SERVER", raising=False)
    root = tmp_path / f"llama-server-{script.build_key()}"
    for folder in ("build", "src"):
        (root / folder / "objects").mkdir(parents=True)
    (root / "llama-server").write_bytes(b"a binary built earlier")
    # flock is per open file: this holder excludes clean() even from the same process.
    with script.build_lock(root / ".build.lock", time.monotonic()):
        with pytest.raises(script.LlamaServerError, match="gave up waiting"):
            script.clean()
        assert (root / "build" / "objects").is_dir()
    assert script.clean() == [root / "build", root / "src"]
    assert sorted(p.name for p in root.iterdir()) == [".build.lock", "llama-server"]


def test_the_build_time_bound_comes_from_the_environment(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSPY_ASYNC_BUILD_TIMEOUT", raising=False)
    assert script.build_timeout() == 2400
    monkeypatch.setenv("DSPY_ASYNC_BUILD_TIMEOUT", "90")
    assert script.build_timeout() == 90
    for bad in ("0", "-5", "nan", "inf", "forty"):
        monkeypatch.setenv("DSPY_ASYNC_BUILD_TIMEOUT", bad)
        with pytest.raises(script.LlamaServerError, match="DSPY_ASYNC_BUILD_TIMEOUT"):
            script.build_timeout()


def test_a_missing_toolchain_is_its_own_error(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(script.ToolchainMissingError, match="cmake"):
        script.check_toolchain()


# A cmake project of six generated C files; generating step 4 blocks until `unblock` exists,
# and every generation appends its number to ran.txt.
CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.10)
project(tiny C)
set(sources main.c)
foreach(i RANGE 1 6)
  add_custom_command(
    OUTPUT ${CMAKE_BINARY_DIR}/step${i}.c
    COMMAND sh ${CMAKE_SOURCE_DIR}/gen.sh ${i} ${CMAKE_BINARY_DIR}/step${i}.c ${CMAKE_SOURCE_DIR}
    VERBATIM)
  list(APPEND sources ${CMAKE_BINARY_DIR}/step${i}.c)
endforeach()
add_executable(tiny ${sources})
"""
GEN_SH = """\
echo "$1" >> "$3/ran.txt"
if [ "$1" = 4 ]; then
  echo $$ > "$3/blocked.pid"
  while [ ! -f "$3/unblock" ]; do sleep 0.1; done
fi
echo "int step$1(void) { return $1; }" > "$2"
"""
MAIN_C = """\
#include <stdio.h>
int step1(void); int step2(void); int step3(void);
int step4(void); int step5(void); int step6(void);
int main(void) {
  printf("%d\\n", step1() + step2() + step3() + step4() + step5() + step6());
  return 0;
}
"""


@pytest.mark.slow
def test_an_interrupted_cmake_build_resumes_where_it_stopped(
    script: ModuleType, tmp_path: Path
) -> None:
    try:
        script.check_toolchain()
    except script.ToolchainMissingError as missing:
        pytest.skip(str(missing))
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CMAKE_LISTS)
    (src / "gen.sh").write_text(GEN_SH)
    (src / "main.c").write_text(MAIN_C)
    ran = src / "ran.txt"

    driver = start_driver("cmake", tmp_path)
    try:
        wait_until(lambda: (src / "blocked.pid").exists(), timeout=100)
        blocked = int((src / "blocked.pid").read_text())
        driver.send_signal(signal.SIGINT)  # Ctrl-C half-way through the build
        driver.wait(timeout=60)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == 130, (tmp_path / "driver.err").read_text()
    assert not running(blocked)
    assert "4" in ran.read_text().split()

    (src / "unblock").touch()
    log, build = tmp_path / "log", tmp_path / "build"
    deadline = time.monotonic() + 100
    started = time.monotonic()
    script.cmake_configure(src, build, (), log, deadline=deadline)
    binary = script.cmake_build(build, "tiny", 1, log, deadline=deadline)
    resumed_in = time.monotonic() - started
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "21\n"
    runs = ran.read_text().split()
    # Steps done before the interrupt were not redone; step 4, cut short, ran again.
    assert sorted(runs) == ["1", "2", "3", "4", "4", "5", "6"], runs
    assert log.read_text().count("$ cmake -S") == 1  # configured once
    assert resumed_in < 90
    shutil.rmtree(build)
