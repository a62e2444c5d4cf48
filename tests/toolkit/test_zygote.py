"""Warm launches (toolkit/zygote): a script started from a zygote that has the framework imported sees
and does exactly what ``python train.py`` would (argv, environment, working directory, sys.path,
stdio, signal handlers, exit codes, tracebacks, SIGTERM then SIGKILL on a stop), only with a warmer
``sys.modules``; nothing outlives the zygote or its instance; and every case where a warm start could
change what the script does starts it plainly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from raymaker.toolkit import zygote as zg
from raymaker.toolkit.process import run_process
from raymaker.toolkit.zygote import WarmLauncher, Zygote, ZygoteError, warm_launcher
from tests.toolkit.procs import alive, wait_dead

pytestmark = pytest.mark.skipif(not zg.supported(), reason="zygotes need Linux pidfds")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def light():
    """A zygote with only a standard module preloaded: cheap, for what does not need a framework."""
    z = Zygote(["decimal"]).start()
    assert z.wait_ready(30)
    yield z
    z.close()


@pytest.fixture(scope="module")
def sklearn_zygote():
    z = Zygote(zg.PRELOAD["sklearn"]).start()
    assert z.wait_ready(120)
    yield z
    z.close()


class Job:
    """A script in its own code directory, run through run_process fresh or from a zygote."""

    def __init__(self, tmp_path, body: str, name: str = "train.py"):
        self.code = tmp_path / "code"
        self.code.mkdir(exist_ok=True)
        (self.code / name).write_text(textwrap.dedent(body))
        self.name = name
        self.lines: list[str] = []
        self.tail: list[str] = []
        self.stop = threading.Event()

    def env(self, **extra) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.code), *filter(None, [env.get("PYTHONPATH")])])
        env.update(extra)
        return env

    def run(self, launcher, *args: str, grace_s: float = 120.0, env=None, on_line=None) -> int:
        import collections

        self.lines = []
        tail: collections.deque[str] = collections.deque(maxlen=100)
        code = run_process(
            [sys.executable, self.name, *args], cwd=str(self.code), env=env or self.env(),
            on_line=on_line or self.lines.append, stop=self.stop, grace_s=grace_s, stderr_tail=tail,
            launcher=launcher,
        )
        self.tail = list(tail)
        return code


# ------------------------------------------------------------------------------------------ what it sees

PARITY = """
import json, os, signal, sys
state = {
    "argv": sys.argv, "orig_argv": sys.orig_argv, "cwd": os.getcwd(), "env": dict(os.environ),
    "path": sys.path, "file": __file__, "name": __name__, "doc": __doc__,
    "globals": sorted(globals()), "loader": type(__loader__).__name__, "spec": repr(__spec__),
    "package": repr(__package__), "cached": repr(__cached__), "annotations": __annotations__,
    "main": sys.modules["__main__"].__dict__ is globals(),
    "stdio": [[getattr(s, a) for a in ("encoding", "errors", "line_buffering", "write_through", "mode", "name")]
              + [s.fileno(), type(s.buffer).__name__, s.buffer.raw.name if hasattr(s.buffer, "raw") else s.buffer.name]
              for s in (sys.stdout, sys.stderr)],
    "dunder_stdio": [sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__],
    "stdin": os.path.realpath("/proc/self/fd/0"),
    "signals": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                if s not in (signal.SIGKILL, signal.SIGSTOP)},
    "own_session": os.getsid(0) == os.getpid() == os.getpgid(0),
    "flags": repr(sys.flags), "executable": sys.executable, "excepthook": sys.excepthook is sys.__excepthook__,
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
}
print(json.dumps(state))
"""


@pytest.mark.parametrize("unbuffered", ["1", ""])
@pytest.mark.parametrize("which", ["light", "sklearn_zygote"])
def test_the_script_sees_what_python_train_py_would(tmp_path, request, which, unbuffered):
    light = request.getfixturevalue(which)
    job = Job(tmp_path, PARITY)
    extra = tmp_path / "extra"
    env = job.env(PYTHONUNBUFFERED=unbuffered, SM_HP_EPOCHS="3")
    env["PYTHONPATH"] += os.pathsep + f"{extra}{os.pathsep}relative{os.pathsep}{job.code}"
    runs = []
    for launcher in (None, light):
        assert job.run(launcher, "--epochs", "3", "two words", env=env) == 0, job.lines
        runs.append(json.loads(job.lines[-1]))
    fresh, warm = runs
    assert warm == fresh
    assert fresh["argv"] == ["train.py", "--epochs", "3", "two words"] and fresh["cwd"] == str(job.code)
    assert fresh["path"][0] == str(job.code) and str(extra) in fresh["path"]


def test_the_framework_is_imported_before_the_first_line(tmp_path, sklearn_zygote):
    job = Job(tmp_path, """
        import sys
        print("warm:", "sklearn" in sys.modules, "sklearn.linear_model" in sys.modules, "numpy" in sys.modules)
        from sklearn.linear_model import LogisticRegression
        import numpy as np
        x = np.arange(20.0).reshape(10, 2)
        y = (x[:, 0] > 9).astype(int)
        print("accuracy", LogisticRegression().fit(x, y).score(x, y))
    """)
    assert job.run(None) == 0
    assert job.lines == ["warm: False False False", "accuracy 1.0"]
    assert job.run(sklearn_zygote) == 0
    assert job.lines == ["warm: True True True", "accuracy 1.0"]


def test_the_script_can_start_processes_of_its_own(tmp_path, sklearn_zygote):
    # multiprocessing's spawn re-runs __main__ from its file; joblib's loky pickles functions defined in
    # it; a fork copies the warm child: all must work as in a fresh python.
    job = Job(tmp_path, """
        import multiprocessing as mp
        import os

        from joblib import Parallel, delayed


        def square(x):
            return x * x


        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                print("spawn", pool.map(square, range(4)))
            print("loky", Parallel(n_jobs=2, backend="loky")(delayed(square)(i) for i in range(4)))
            pid = os.fork()
            if pid == 0:
                print("forked", square(5), flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
    """)
    assert job.run(None) == 0, job.lines
    fresh = sorted(job.lines)
    assert job.run(sklearn_zygote) == 0, job.lines
    assert sorted(job.lines) == fresh == ["forked 25", "loky [0, 1, 4, 9]", "spawn [0, 1, 4, 9]"]


def test_each_child_draws_its_own_random_numbers(tmp_path, sklearn_zygote):
    # A fresh python seeds numpy's global generator from entropy; forked children must not share one.
    job = Job(tmp_path, "import numpy, random; print(numpy.random.randint(1 << 30), random.getrandbits(30))\n")
    draws = set()
    for _ in range(3):
        assert job.run(sklearn_zygote) == 0
        draws.add(job.lines[-1])
    assert len(draws) == 3


def test_torch_children_draw_their_own_random_numbers(tmp_path):
    pytest.importorskip("torch")
    z = Zygote(["torch"]).start()
    try:
        assert z.wait_ready(120)
        job = Job(tmp_path, "import sys, torch\nprint('torch' in sys.modules, torch.rand(1).item(), torch.initial_seed())\n")
        draws = set()
        for _ in range(3):
            assert job.run(z) == 0
            assert job.lines[-1].startswith("True ")
            draws.add(job.lines[-1])
        assert len(draws) == 3
    finally:
        z.close()


def test_what_the_imports_printed_is_printed_again(tmp_path):
    # A library's import-time notice (or warning) is part of what a fresh script prints.
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "noisy.py").write_text("import sys\nprint('noisy: loaded')\nprint('noisy: note', file=sys.stderr)\n")
    (lib / "broken.py").write_text("print('broken: partial')\nraise ImportError('no')\n")
    env = dict(os.environ, PYTHONPATH=str(lib))
    z = Zygote(["noisy", "broken"], env).start()
    try:
        assert z.wait_ready(30) and "noisy" in z.loaded and "broken" not in z.loaded
        job = Job(tmp_path, "import noisy\nprint('script')\n")
        env = job.env()
        env["PYTHONPATH"] = os.pathsep.join([str(job.code), str(lib)])
        assert job.run(None, env=env) == 0
        fresh = sorted(job.lines)
        assert job.run(z, env=env) == 0
        assert sorted(job.lines) == fresh == ["noisy: loaded", "noisy: note", "script"]
    finally:
        z.close()


def test_output_is_streamed_while_the_script_runs(tmp_path, light):
    go = tmp_path / "go"
    job = Job(tmp_path, f"""
        import os, sys, time
        print("waiting", flush=True)
        print("on stderr", file=sys.stderr)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        print("done")
    """)

    def on_line(line: str) -> None:
        job.lines.append(line)
        if line == "waiting":
            go.touch()

    assert job.run(light, on_line=on_line) == 0
    assert sorted(job.lines) == ["done", "on stderr", "waiting"]


# ------------------------------------------------------------------------------------------ how it ends

ENDINGS = {
    "zero": ("print('fine')\n", 0),
    "three": ("import sys\nsys.exit(3)\n", 3),
    "message": ("raise SystemExit('bye now')\n", 1),
    "none": ("raise SystemExit\n", 0),
    "exception": ("def f():\n    raise ValueError('boom')\nf()\n", 1),
    "syntax": ("def (\n", 1),
    "sigterm": ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", 128 + signal.SIGTERM),
    "sigkill": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", 137),
    "interrupt": ("raise KeyboardInterrupt\n", 128 + signal.SIGINT),
    "thread": ("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), print('late'))).start()\n", 0),
    "atexit": ("import atexit, sys\natexit.register(lambda: print('atexit ran'))\nsys.exit(4)\n", 4),
    "buffered": ("import sys\nsys.stdout.write('no newline, no flush')\n", 0),
}


@pytest.mark.parametrize("case", sorted(ENDINGS))
def test_exit_codes_and_output_match_a_fresh_python(tmp_path, light, case):
    body, expected = ENDINGS[case]
    job = Job(tmp_path, body)
    env = job.env(PYTHONUNBUFFERED="")
    assert job.run(None, env=env) == expected
    fresh_lines, fresh_tail = job.lines, job.tail
    assert job.run(light, env=env) == expected
    assert sorted(job.lines) == sorted(fresh_lines)
    assert job.tail == fresh_tail  # stderr: the traceback as python prints it, from the script's frame


def test_an_uncaught_exception_prints_the_scripts_traceback(tmp_path, light):
    job = Job(tmp_path, ENDINGS["exception"][0])
    assert job.run(light) == 1
    assert job.tail[0] == "Traceback (most recent call last):"
    assert job.tail[1] == f'  File "{job.code}/train.py", line 3, in <module>'
    assert job.tail[-1] == "ValueError: boom"
    assert not any("zygote" in line or "runpy" in line for line in job.tail)


def test_a_missing_script_is_told_as_python_tells_it(tmp_path, light):
    job = Job(tmp_path, "")
    job.name = "absent.py"
    assert job.run(None) == 2
    fresh = job.tail
    assert job.run(light) == 2
    assert job.tail == fresh and "can't open file" in fresh[0]


def test_stop_sends_sigterm_which_the_script_handles(tmp_path, light):
    job = Job(tmp_path, """
        import signal, sys, time
        def leave(signum, frame):
            print("got SIGTERM, saving", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, leave)
        print("ready", flush=True)
        time.sleep(60)
    """)

    def on_line(line: str) -> None:
        job.lines.append(line)
        if line == "ready":
            job.stop.set()

    t0 = time.monotonic()
    assert job.run(light, on_line=on_line) == 0
    assert time.monotonic() - t0 < 30  # not the script's 60 s sleep (nor a 120 s grace)
    assert job.lines == ["ready", "got SIGTERM, saving"]


def test_a_script_ignoring_sigterm_is_killed_after_the_grace(tmp_path, light):
    job = Job(tmp_path, """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        print("pids", os.getpid(), child.pid, flush=True)
        time.sleep(60)
    """)
    pids: list[int] = []

    def on_line(line: str) -> None:
        if line.startswith("pids "):
            pids.extend(int(p) for p in line.split()[1:])
            job.stop.set()

    t0 = time.monotonic()
    assert job.run(light, grace_s=0.5, on_line=on_line) == 137
    assert time.monotonic() - t0 < 30  # not the script's 60 s sleep (nor a 120 s grace)
    assert all(wait_dead(p) for p in pids)  # its whole group went


def test_what_the_script_left_running_ends_with_it(tmp_path, light):
    job = Job(tmp_path, """
        import subprocess
        p = subprocess.Popen(["sleep", "60"])
        print("daemon", p.pid, flush=True)
    """)
    assert job.run(light) == 0
    pid = int(job.lines[0].split()[1])
    assert wait_dead(pid)


def test_a_zygote_killed_mid_job_ends_the_job(tmp_path):
    z = Zygote(["json"]).start()
    assert z.wait_ready(30)
    job = Job(tmp_path, "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(60)\n")
    pids: list[int] = []

    def on_line(line: str) -> None:
        pids.append(int(line.split()[1]))
        os.kill(z.pid, signal.SIGKILL)

    try:
        t0 = time.monotonic()
        assert job.run(z, on_line=on_line) == 137
        assert time.monotonic() - t0 < 30  # not the script's 60 s sleep (nor a 120 s grace)
        assert wait_dead(pids[0])
        assert not z.alive()
        with pytest.raises(ZygoteError):
            z.launch([sys.executable, "train.py"], cwd=str(job.code), env=job.env())
    finally:
        z.close()


def test_a_dead_zygote_means_a_plain_start(tmp_path):
    z = Zygote(["json"]).start()
    assert z.wait_ready(30)
    os.kill(z.pid, signal.SIGKILL)
    wait_dead(z.pid)
    job = Job(tmp_path, "import sys\nprint('json' in sys.modules)\n")
    assert job.run(z) == 0  # the launcher could not: started here instead
    assert job.lines == ["False"]
    z.close()


HOLDER = """
import sys, threading, time
sys.path.insert(0, {root!r})
from raymaker.toolkit.zygote import Zygote
box = []
t = threading.Thread(target=lambda: box.append(Zygote(["json"]).start()))
t.start()
t.join()  # the thread that asked for it has ended: the zygote must not die with that thread
z = box[0]
assert z.wait_ready(30)
time.sleep(0.5)
assert z.alive()
p = z.launch([sys.executable, "sleeper.py"], cwd={cwd!r}, env=dict(__import__("os").environ))
print(z.pid, p.pid, flush=True)
time.sleep(60)
"""


def test_the_zygote_and_its_jobs_die_with_the_instance(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(root=ROOT, cwd=str(tmp_path))], stdout=subprocess.PIPE, text=True,
    )
    try:
        line = holder.stdout.readline()
        assert line, "the holder did not start its zygote"
        zygote_pid, job_pid = map(int, line.split())
        assert alive(zygote_pid) and alive(job_pid)
        holder.kill()  # as Ray kills an instance actor
        holder.wait()
        assert wait_dead(zygote_pid)
        assert wait_dead(job_pid)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------ choosing


def test_the_cold_job_starts_plainly_and_leaves_a_zygote_for_the_next(tmp_path):
    launcher = WarmLauncher("test", ["json"])
    job = Job(tmp_path, "import sys\nprint('json' in sys.modules)\n")
    cmd, cwd, env, prefix = [sys.executable, "train.py"], str(job.code), job.env(), [str(job.code)]
    try:
        assert launcher.choose(cmd, cwd, env, prefix) is None  # none yet, and none started for the cold job
        assert not launcher._zygotes
        launcher.warm_up(cmd, cwd, env, prefix)
        z = launcher.choose(cmd, cwd, env, prefix)  # waits for its imports
        assert isinstance(z, Zygote) and z.ready
        # Another job: other per-job variables, same zygote.
        other = dict(env, SM_HP_LR="0.5", TRAINING_JOB_NAME="other", SM_CURRENT_HOST="algo-2")
        assert launcher.choose(cmd, cwd, other, prefix) is z
        launcher.warm_up(cmd, cwd, other, prefix)
        assert list(launcher._zygotes.values()) == [z]
        assert job.run(z) == 0 and job.lines == ["True"]
    finally:
        launcher.close()


def test_what_must_start_plainly(tmp_path):
    launcher = WarmLauncher("test", ["json"])
    job = Job(tmp_path, "print('hi')\n")
    cmd, cwd, env, prefix = [sys.executable, "train.py"], str(job.code), job.env(), [str(job.code)]
    try:
        launcher.warm_up(cmd, cwd, env, prefix)
        assert launcher.choose(cmd, cwd, env, prefix) is not None

        # Not a .py program: a shell command, a package run with -m.
        assert launcher.choose(["/bin/sh", "-c", "./train.sh --a 1"], cwd, env, prefix) is None
        assert launcher.choose([sys.executable, "-m", "train", "--a"], cwd, env, prefix) is None
        assert launcher.choose(["/usr/bin/python2", "train.py"], cwd, env, prefix) is None
        # The user's code has a module the zygote imported: theirs would be shadowed.
        (job.code / "json.py").write_text("")
        assert launcher.choose(cmd, cwd, env, prefix) is None
        (job.code / "json.py").unlink()
        # Installed requirements hold a package the zygote imported (a pinned other version).
        site = tmp_path / "env" / "site-packages"
        (site / "json").mkdir(parents=True)
        (site / "json-9.0.dist-info").mkdir()
        (site / "small_pkg").mkdir()
        paths = [str(job.code), str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
        env2 = dict(env, PYTHONPATH=os.pathsep.join(paths))
        assert launcher.choose(cmd, cwd, env2, [str(job.code), str(site)]) is None
        (site / "json").rmdir()
        assert launcher.choose(cmd, cwd, env2, [str(job.code), str(site)]) is not None  # no conflict left
        # PYTHONPATH not as the runner builds it.
        assert launcher.choose(cmd, cwd, dict(env, PYTHONPATH="/elsewhere"), prefix) is None
        # Another environment affecting imports: another zygote, not started yet.
        assert launcher.choose(cmd, cwd, dict(env, OMP_NUM_THREADS="7"), prefix) is None
    finally:
        launcher.close()


def test_a_dead_zygote_is_replaced_after_the_next_job(tmp_path):
    launcher = WarmLauncher("test", ["json"])
    job = Job(tmp_path, "print('hi')\n")
    cmd, cwd, env, prefix = [sys.executable, "train.py"], str(job.code), job.env(), [str(job.code)]
    try:
        launcher.warm_up(cmd, cwd, env, prefix)
        first = launcher.choose(cmd, cwd, env, prefix)
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        assert wait_dead(first.pid)
        deadline = time.monotonic() + 5
        while first.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert launcher.choose(cmd, cwd, env, prefix) is None
        launcher.warm_up(cmd, cwd, env, prefix)
        second = launcher.choose(cmd, cwd, env, prefix)
        assert second is not None and second is not first and second.pid != first.pid
    finally:
        launcher.close()


def test_environments_beyond_the_limit_close_the_least_recent(tmp_path):
    launcher = WarmLauncher("test", ["json"], limit=2)
    job = Job(tmp_path, "print('hi')\n")
    cmd, cwd, prefix = [sys.executable, "train.py"], str(job.code), [str(job.code)]
    try:
        zygotes = []
        for n in (1, 2, 3):
            env = job.env(OMP_NUM_THREADS=str(n))
            launcher.warm_up(cmd, cwd, env, prefix)
            zygotes.append(launcher.choose(cmd, cwd, env, prefix))
        assert all(zygotes) and len(launcher._zygotes) == 2
        assert not zygotes[0].alive() and zygotes[1].alive() and zygotes[2].alive()
    finally:
        launcher.close()


def test_warm_launcher_per_framework(monkeypatch):
    assert warm_launcher("sklearn") is warm_launcher("sklearn")
    assert warm_launcher("sklearn").modules == zg.PRELOAD["sklearn"]
    assert warm_launcher("unknown") is None and warm_launcher(None) is None
    monkeypatch.setenv(zg.ENABLE_ENV, "0")
    assert warm_launcher("sklearn") is None


def test_run_script_starts_the_second_job_warm_and_ends_both_alike(tmp_path):
    # The runner's seam: same logs, metrics, success file and failure reason, warm or not.
    from tests.toolkit.test_runner import Run, spec_for

    script = (
        "import sys\nprint('warm', 'json' in sys.modules)\n"
        "print('loss=0.25')\n"
        "if 'fail' in sys.argv:\n    raise RuntimeError('bad data')\n"
    )
    launcher = WarmLauncher("test", ["json"])
    try:
        outcomes = []
        # cold (leaves a zygote), warm, a failure started plainly, the same failure warm
        for i, (mode, warm) in enumerate([("ok", launcher), ("ok", launcher), ("fail", None), ("fail", launcher)]):
            (tmp_path / f"run{i}").mkdir()
            run = Run(tmp_path / f"run{i}")
            hps = {"sagemaker_program": '"train.py"', "mode": json.dumps(mode)}
            spec = spec_for(tmp_path / f"run{i}", {"train.py": script}, hyperparameters=hps)
            if i == 1:  # the zygote the first job left has finished its imports
                assert next(iter(launcher._zygotes.values())).wait_ready(30)
            try:
                run(spec, warm=warm)
                reason = None
            except Exception as e:  # noqa: BLE001
                reason = e.failure_reason.replace(run.tree.root, "<root>")
            logs = [ln.replace(run.tree.root, "<root>") for ln in run.logs]
            with open(run.tree.failure_file) if reason else open(os.devnull) as f:
                failure = f.read().replace(run.tree.root, "<root>")
            outcomes.append((logs, run.metrics, reason, failure, os.path.exists(run.tree.success_file)))
        firsts = [next(ln for ln in o[0] if ln.startswith("warm")) for o in outcomes]
        assert firsts == ["warm False", "warm True", "warm False", "warm True"]
        assert [o[1:] for o in outcomes[:2]] == [([{"train:loss": 0.25}], None, "", True)] * 2
        fresh, warm = outcomes[2], outcomes[3]
        # (stdout and stderr are two pipes: their lines interleave as they come, warm or not)
        assert sorted(ln for ln in fresh[0] if not ln.startswith("warm")) == sorted(ln for ln in warm[0] if not ln.startswith("warm"))
        assert fresh[1:] == warm[1:]
        assert "RuntimeError: bad data" in fresh[2] and "RuntimeError: bad data" in fresh[3] and not fresh[4]
    finally:
        launcher.close()
