"""The user's process, run for real: output streamed while it runs, stopped as StopTrainingJob stops a
container (SIGTERM, SIGKILL after the grace period), nothing it started left behind, killed with the
actor that holds it, and its failure told as SageMaker tells it."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from raymaker.toolkit.paths import MLTree
from raymaker.toolkit.process import MAX_REASON, failure_reason, run_process
from tests.toolkit.procs import alive, wait_dead

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script(tmp_path, body: str) -> list[str]:
    path = tmp_path / "s.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(path)]


def run(cmd, tmp_path, *, stop=None, grace_s=120.0, tail=None, on_line=None):
    lines: list[str] = []
    code = run_process(
        cmd, cwd=str(tmp_path), env=dict(os.environ), on_line=on_line or lines.append,
        stop=stop or threading.Event(), grace_s=grace_s, stderr_tail=tail,
    )
    return code, lines


def test_output_reaches_on_line_while_the_script_runs(tmp_path):
    # The script waits for a file that the test only creates once the script's first line arrived:
    # if lines were delivered at exit, this would never finish.
    go = tmp_path / "go"
    cmd = script(tmp_path, f"""
        import os, sys, time
        print("started")
        print("warn\\tx", file=sys.stderr)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        print("done")
    """)

    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "started":
            go.touch()

    tail: collections.deque[str] = collections.deque(maxlen=5)
    code, _ = run(cmd, tmp_path, on_line=on_line, tail=tail)
    assert code == 0
    assert seen.index("started") < seen.index("done")
    assert "warn\tx" in seen  # stderr too, the line as printed
    assert list(tail) == ["warn\tx"]  # only stderr is kept for the failure reason


def test_exit_code_and_stderr_tail(tmp_path):
    cmd = script(tmp_path, """
        import sys
        for i in range(10):
            print(f"err {i}", file=sys.stderr)
        sys.exit(3)
    """)
    tail: collections.deque[str] = collections.deque(maxlen=4)
    code, lines = run(cmd, tmp_path, tail=tail)
    assert code == 3
    assert list(tail) == ["err 6", "err 7", "err 8", "err 9"]
    assert len(lines) == 10


def test_environment_and_working_directory(tmp_path):
    cmd = script(tmp_path, "import os; print(os.getcwd(), os.environ['ONLY_HERE'])")
    lines: list[str] = []
    code = run_process(cmd, cwd=str(tmp_path), env={**os.environ, "ONLY_HERE": "yes"}, on_line=lines.append,
                       stop=threading.Event())
    assert code == 0 and lines == [f"{tmp_path} yes"]


def test_stop_sends_sigterm_and_the_script_may_exit_cleanly(tmp_path):
    cmd = script(tmp_path, """
        import signal, sys, time
        def bye(*_):
            print("got SIGTERM, saving")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready")
        time.sleep(60)
    """)
    stop = threading.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "ready":
            stop.set()

    start = time.monotonic()
    code, _ = run(cmd, tmp_path, stop=stop, grace_s=30, on_line=on_line)
    assert code == 0
    assert lines == ["ready", "got SIGTERM, saving"]
    assert time.monotonic() - start < 10


def test_stop_sigkills_after_the_grace_period(tmp_path):
    cmd = script(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready")
        time.sleep(60)
    """)
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            stop.set()

    start = time.monotonic()
    code, _ = run(cmd, tmp_path, stop=stop, grace_s=0.5, on_line=on_line)
    elapsed = time.monotonic() - start
    assert code == 137  # 128 + SIGKILL, as Docker reports it
    assert 0.5 <= elapsed < 10


def test_stop_reaches_everything_the_script_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    cmd = ["/bin/sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo ready; wait"]
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            stop.set()

    code, _ = run(cmd, tmp_path, stop=stop, grace_s=5, on_line=on_line)
    assert code != 0
    assert wait_dead(int(pid_file.read_text()))


def test_processes_left_behind_at_exit_are_killed(tmp_path):
    # A script that exits leaving a daemon (holding its stdout) must not hang the run, nor leak it.
    pid_file = tmp_path / "daemon.pid"
    cmd = ["/bin/sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo bye"]
    start = time.monotonic()
    code, lines = run(cmd, tmp_path)
    assert code == 0 and lines == ["bye"]
    assert time.monotonic() - start < 10
    assert wait_dead(int(pid_file.read_text()))


def test_the_script_dies_with_the_process_that_runs_it(tmp_path):
    # An actor killed by Ray (SIGKILL: no cleanup runs) must not leave its script training on.
    holder = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {ROOT!r})
        from raymaker.toolkit.process import run_process
        run_process(["/bin/sh", "-c", "echo $$; exec sleep 60"], cwd={str(tmp_path)!r}, env={{}},
                    on_line=lambda l: print(l, flush=True), stop=threading.Event())
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        assert alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_dead(child)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


# ------------------------------------------------------------------------------------ failure reason


def test_failure_file_is_the_reason(tmp_path):
    tree = MLTree(str(tmp_path)).make()
    with open(tree.failure_file, "w") as f:
        f.write("label column has 3 classes" + "x" * 2000)
    reason = failure_reason(tree, 1, ["Traceback (most recent call last):", "ValueError: other"])
    assert reason.startswith("label column has 3 classes")
    assert len(reason) == MAX_REASON


def test_without_failure_file_the_reason_is_sagemakers_wording_with_the_error(tmp_path):
    tree = MLTree(str(tmp_path)).make()
    stderr = ["some warning", "Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
              "ValueError: learning rate must be positive"]
    reason = failure_reason(tree, 1, stderr, [sys.executable, "train.py", "--lr", "-1"])
    assert reason == (
        "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"Traceback (most recent call last):\n"
        '  File "train.py", line 3, in <module>\nValueError: learning rate must be positive"\n'
        f'Command "{sys.executable} train.py --lr -1", exit code: 1'
    )


def test_sigkill_is_reported_as_the_toolkit_does(tmp_path):
    reason = failure_reason(MLTree(str(tmp_path)).make(), 137, [], ["python", "train.py"])
    assert 'ExitCode 137' in reason
    assert 'ExtraInfo "OutOfMemory: Process killed by SIGKILL (signal 9)"' in reason


def test_long_stderr_keeps_the_error_within_1024_characters(tmp_path):
    stderr = ["Traceback (most recent call last):"] + [f'  File "m{i}.py", line {i}' for i in range(200)]
    stderr.append("RuntimeError: the actual problem")
    reason = failure_reason(MLTree(str(tmp_path)).make(), 1, stderr, ["python", "train.py"])
    assert len(reason) <= MAX_REASON
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:")
    assert "RuntimeError: the actual problem" in reason
    assert reason.endswith('Command "python train.py", exit code: 1')


@pytest.mark.parametrize("content", ["", "  \n"])
def test_an_empty_failure_file_does_not_count(tmp_path, content):
    tree = MLTree(str(tmp_path)).make()
    with open(tree.failure_file, "w") as f:
        f.write(content)
    assert failure_reason(tree, 2, ["boom"]).startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 2")
