"""The zygote's own side (see ``raymaker.toolkit.zygote``): a Python started clean, which imports a
framework once and then forks one child per script-mode job, each child made into what
``python <entry_point> args`` would have been, with the framework already in ``sys.modules``.

Standard library only, and little of it: every child inherits each module this process holds. Started
by ``zygote.Zygote`` as ``python -c BOOT <this file> <control fd> <module>...``; raymaker imports it
as a module only for the framing helpers below.

Protocol, over Unix stream sockets, each message a 4-byte length and JSON:

* control socket: the zygote sends ``{"ready": true, "pid", "modules"}`` once its imports are done;
  then each request ``{"argv", "cwd", "env"}`` arrives with three descriptors (the job's stdout and
  stderr pipe write ends, and one end of a socket for that job).
* job socket: the zygote sends ``{"pid": N}`` once the child runs in its own session, then
  ``{"exit": code}`` when it ends (128 + N for a signal N). The child is reaped only after the parent
  answers ``{"release": true}`` (or closes its end), so until then its pid and process group cannot be
  reused and the parent's ``killpg`` reaches the right processes. A job socket closed while the child
  runs kills its group. The control socket closed: every child's group is killed and the zygote exits.
"""

import json
import os
import select
import signal
import socket
import struct
import sys

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1
_HERE = __file__  # the frames of this file are cut from a script's traceback
_PRCTL = None  # libc's prctl, resolved by main()

# What zygote.Zygote runs with ``python -c``: the modules a fresh interpreter has loaded are recorded
# first, and the '' that -c puts first on sys.path is dropped (a job's path is rebuilt from its own cwd).
BOOT = (
    "import sys\n"
    "startup = frozenset(sys.modules)\n"
    "if not getattr(sys.flags, 'safe_path', False):\n"
    "    del sys.path[0]\n"
    "path = sys.argv[1]\n"
    "with open(path, 'rb') as f:\n"
    "    code = compile(f.read(), path, 'exec', dont_inherit=True)\n"
    "zygote = {'__name__': '__zygote__', '__file__': path, '__builtins__': __builtins__}\n"
    "exec(code, zygote)\n"
    "zygote['main'](sys.argv[2:], startup)\n"
)


# ------------------------------------------------------------------------------------------ framing


def send_msg(sock, obj, fds=()):
    """One message; ``fds`` travel with its first byte."""
    body = json.dumps(obj).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_msg(sock, max_fds=0):
    """``(message, fds)``, or ``(None, [])`` at the end of the stream. Reads exactly one message."""
    header, fds = _recv_exact(sock, _HEADER.size, max_fds)
    if header is None:
        return None, []
    body, _ = _recv_exact(sock, _HEADER.unpack(header)[0], 0)
    if body is None:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(body), fds


def _recv_exact(sock, n, max_fds):
    buf, fds = b"", []
    while len(buf) < n:
        if max_fds and not buf:
            data, got, _flags, _addr = socket.recv_fds(sock, n, max_fds)
            fds += got
        else:
            data = sock.recv(n - len(buf))
        if not data:
            if buf or fds:
                for fd in fds:
                    os.close(fd)
            return None, []
        buf += data
    return buf, fds


def exit_status(si_code, si_status):
    """A waitid result as run_process reports it: the exit code, or 128 + N for signal N."""
    return si_status if si_code == os.CLD_EXITED else 128 + si_status


# ------------------------------------------------------------------------------------------ zygote


def main(args, startup):
    global _PRCTL
    import ctypes

    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved once: each child calls it at once
    ctrl = socket.socket(fileno=int(args[0]))
    state = {
        "handlers": _signal_handlers(),  # a fresh interpreter's, restored in each child
        "base": base_path(sys.path, os.environ.get("PYTHONPATH", ""), os.getcwd()),
    }
    state["captured"] = _preload(args[1:])
    torch = sys.modules.get("torch")
    if torch is not None and getattr(getattr(torch, "cuda", None), "is_initialized", lambda: False)():
        # A forked child cannot use CUDA its parent initialized: this zygote would break GPU scripts.
        send_msg(ctrl, {"ready": False, "error": "the imports initialized CUDA; forked children could not use it"})
        os._exit(0)
    started = {name.partition(".")[0] for name in startup}
    loaded = sorted({name.partition(".")[0] for name in sys.modules} - started)
    try:
        send_msg(ctrl, {"ready": True, "pid": os.getpid(), "modules": loaded})
    except OSError:
        os._exit(0)
    _serve(ctrl, state)
    os._exit(0)


def _signal_handlers():
    out = {}
    for sig in signal.valid_signals():
        try:
            out[sig] = signal.getsignal(sig)
        except (OSError, ValueError):
            pass
    return out


def _preload(modules):
    """Import ``modules``; what the imports printed (warnings, a library's notices) is kept, and each
    child prints it again, as its own imports would have. A module that fails to import is left out,
    with what it printed: the script's own import reports it."""
    import importlib

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out, err = os.memfd_create("zygote-stdout"), os.memfd_create("zygote-stderr")
    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        for name in modules:
            marks = os.lseek(out, 0, os.SEEK_CUR), os.lseek(err, 0, os.SEEK_CUR)
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - ImportError, or anything a broken install raises
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, mark in zip((out, err), marks):
                    os.ftruncate(fd, mark)
                    os.lseek(fd, mark, os.SEEK_SET)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    captured = []
    for fd in (out, err):
        size = os.lseek(fd, 0, os.SEEK_END)
        captured.append(os.pread(fd, size, 0) if size else b"")
        os.close(fd)
    return captured


class _Job:
    __slots__ = ("pid", "sock", "pidfd", "code")

    def __init__(self, pid, sock, pidfd):
        self.pid, self.sock, self.pidfd, self.code = pid, sock, pidfd, None


def _serve(ctrl, state):
    poller = select.poll()
    poller.register(ctrl, select.POLLIN)
    by_fd = {}  # pidfd or job socket fd -> job
    jobs = {}  # pid -> job

    def drop_sock(job):
        if job.sock is not None:
            by_fd.pop(job.sock.fileno(), None)
            poller.unregister(job.sock)
            job.sock.close()
            job.sock = None

    def reap(job):
        os.waitpid(job.pid, 0)
        jobs.pop(job.pid, None)

    def release(job):
        drop_sock(job)
        if job.code is None:  # the parent gave up on it: the group goes; reaped when it has ended
            _killpg(job.pid, signal.SIGKILL)
        else:
            reap(job)

    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ev in events:
            if fd == ctrl.fileno():
                request, fds = recv_msg(ctrl, max_fds=3)
                if request is None:  # the instance closed it (or died): nothing outlives it
                    for job in list(jobs.values()):
                        _killpg(job.pid, signal.SIGKILL)
                    for job in list(jobs.values()):
                        reap(job)
                    return
                job = _start(request, fds, ctrl, jobs, state)
                if job is not None:
                    jobs[job.pid] = job
                    by_fd[job.pidfd] = job
                    by_fd[job.sock.fileno()] = job
                    poller.register(job.pidfd, select.POLLIN)
                    poller.register(job.sock, select.POLLIN)
                break  # the new job may reuse a descriptor number this batch still names: poll again
            job = by_fd.get(fd)
            if job is None:
                continue
            if fd == job.pidfd:  # the child ended: told, kept as a zombie until released
                info = os.waitid(os.P_PID, job.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
                if info is None:
                    continue
                job.code = exit_status(info.si_code, info.si_status)
                del by_fd[fd]
                poller.unregister(fd)
                os.close(fd)
                job.pidfd = None
                if job.sock is None:
                    reap(job)
                    continue
                try:
                    send_msg(job.sock, {"exit": job.code})
                except OSError:
                    release(job)
            else:
                try:
                    message, _ = recv_msg(job.sock)
                except OSError:
                    message = None
                if message is None or message.get("release"):
                    release(job)


def _start(request, fds, ctrl, jobs, state):
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    out, err, sock_fd = fds
    sock = socket.socket(fileno=sock_fd)
    ready_r, ready_w = os.pipe()
    zygote_pid = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        for fd in (out, err, ready_r, ready_w):
            os.close(fd)
        try:
            send_msg(sock, {"error": f"fork failed: {e}"})
        except OSError:
            pass
        sock.close()
        return None
    if pid == 0:
        os.close(ready_r)
        own = [ctrl, sock, *(j.sock for j in jobs.values() if j.sock is not None)]
        pidfds = [j.pidfd for j in jobs.values() if j.pidfd is not None]
        _child(request, out, err, ready_w, own, pidfds, state, zygote_pid)  # never returns
    os.close(out)
    os.close(err)
    os.close(ready_w)
    os.read(ready_r, 1)  # b"" once the child has its own session (or has died)
    os.close(ready_r)
    pidfd = os.pidfd_open(pid)  # a zombie still has one: nothing reaps it but us
    job = _Job(pid, sock, pidfd)
    try:
        send_msg(sock, {"pid": pid})
    except OSError:
        _killpg(pid, signal.SIGKILL)
    return job


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------ child


def _child(request, out, err, ready_w, own, pidfds, state, zygote_pid):
    """The forked child: made into ``python <script> args`` as the job would have started it, then the
    script, then the interpreter's exit. Never returns."""
    code = 1
    try:
        os.setsid()
        _die_with(zygote_pid)
        os.close(ready_w)  # the zygote may now report this pid: its group exists
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (out, err, *pidfds):
            if fd > 2:
                os.close(fd)
        for s in own:
            s.close()
        code = _run(request, state)
    except BaseException:  # noqa: BLE001 - a failure of the set-up itself: told on the job's stderr
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _die_with(zygote_pid):
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:  # the zygote died before prctl took effect
        os._exit(137)


def _run(request, state):
    argv, cwd, env = list(request["argv"]), request["cwd"], dict(request["env"])
    for sig, handler in state["handlers"].items():
        try:
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        except (OSError, ValueError, TypeError):
            pass
    _reseed()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    script = argv[1]
    file = script if script.startswith("/") else os.path.join(cwd, script)  # as __main__.__file__
    sys.argv = argv[1:]
    sys.orig_argv = argv
    sys.path[:] = _sys_path(file, cwd, env.get("PYTHONPATH", ""), state["base"])
    import importlib

    importlib.invalidate_caches()
    _stdio(bool(env.get("PYTHONUNBUFFERED")) and not sys.flags.ignore_environment)
    for stream, data in zip((sys.stdout, sys.stderr), state["captured"]):
        if data:
            stream.flush()
            os.write(stream.fileno(), data)
    return _run_main(file, argv[0])


def _reseed():
    """Generators a fresh process seeds from entropy at import, seeded again, or every child would draw
    the zygote's numbers: numpy's global RandomState and torch's CPU generator (``random`` reseeds
    itself after a fork; torch's CUDA generators start from a fixed seed in a fresh process too, and
    are left alone)."""
    for module, reseed in (("numpy.random", lambda m: m.seed()), ("torch", lambda m: m.default_generator.seed())):
        loaded = sys.modules.get(module)
        if loaded is not None:
            try:
                reseed(loaded)
            except Exception:  # noqa: BLE001
                pass


def resolve_pythonpath(pythonpath, cwd):
    """PYTHONPATH as a fresh interpreter puts it on sys.path: relative entries (and empty ones) against
    the working directory."""
    if not pythonpath:
        return []
    out = []
    for entry in pythonpath.split(os.pathsep):
        if not entry:
            entry = cwd
        elif not entry.startswith("/"):
            entry = cwd + "/" + entry
        out.append(os.path.abspath(entry))
    return out


def base_path(path, pythonpath, cwd):
    """sys.path without what PYTHONPATH put there: the interpreter's own part (stdlib, site-packages)."""
    mine = set(resolve_pythonpath(pythonpath, cwd))
    return [p for p in path if p not in mine]


def _sys_path(file, cwd, pythonpath, base):
    """The sys.path of ``python <file>`` run in ``cwd`` with ``pythonpath``: the script's directory
    (symlinks resolved), then PYTHONPATH and the interpreter's directories without duplicates (site
    removes them before the script's directory is put first)."""
    seen, rest = set(), []
    for p in [*resolve_pythonpath(pythonpath, cwd), *base]:
        if p not in seen:
            seen.add(p)
            rest.append(p)
    if getattr(sys.flags, "safe_path", False):
        return rest
    return [os.path.dirname(os.path.realpath(file)), *rest]


def _stdio(unbuffered):
    """sys.stdout and sys.stderr as a fresh interpreter makes them on pipes: block-buffered stdout,
    line-buffered stderr; both write-through under PYTHONUNBUFFERED."""
    import io

    buffered = not unbuffered
    for fd, name, attr in ((1, "<stdout>", "stdout"), (2, "<stderr>", "stderr")):
        old = getattr(sys, attr)
        buf = open(fd, "wb", buffering=-1 if buffered else 0, closefd=False)  # noqa: SIM115
        raw = buf.raw if buffered else buf
        raw.name = name
        text = io.TextIOWrapper(
            buf, encoding=old.encoding, errors=old.errors, newline="\n",
            line_buffering=buffered and (fd == 2 or os.isatty(fd)), write_through=not buffered,
        )
        text.mode = "w"
        setattr(sys, attr, text)
        setattr(sys, f"__{attr}__", text)


def _run_main(file, program):
    """Run ``file`` as ``__main__``, as the interpreter does, and end as it ends: SystemExit's code, 1
    with the traceback (through sys.excepthook) for an uncaught exception, death by SIGINT for an
    uncaught KeyboardInterrupt; then non-daemon threads joined, atexit handlers run, streams flushed."""
    import builtins
    import io
    import types
    from importlib.machinery import SourceFileLoader

    try:
        with io.open_code(file) as f:
            source = f.read()
    except OSError as e:
        sys.stderr.write(f"{program}: can't open file {file!r}: [Errno {e.errno}] {e.strerror}\n")
        return _finalize(2, False)
    main = types.ModuleType("__main__")
    main.__file__ = file
    main.__cached__ = None
    main.__loader__ = SourceFileLoader("__main__", file)
    main.__builtins__ = builtins
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    interrupted = False
    try:
        exec(compile(source, file, "exec", dont_inherit=True), main.__dict__)
        status = 0
    except SystemExit as e:
        status = _system_exit(e)
    except BaseException as e:  # noqa: BLE001 - what the interpreter prints and exits 1 for
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
            tb = tb.tb_next
        e = e.with_traceback(tb)
        sys.last_type, sys.last_value, sys.last_traceback = type(e), e, tb
        try:
            sys.excepthook(type(e), e, tb)
        except BaseException:  # noqa: BLE001
            sys.__excepthook__(type(e), e, tb)
        interrupted = isinstance(e, KeyboardInterrupt)
        status = 1
    return _finalize(status, interrupted)


def _system_exit(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def _finalize(status, interrupted):
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()  # the interpreter's wait for non-daemon threads
        except BaseException:  # noqa: BLE001
            pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except Exception:  # noqa: BLE001
            if stream is sys.stdout:
                status = 120  # as Py_FinalizeEx: stdout could not be flushed
    if interrupted:  # the interpreter ends an uncaught KeyboardInterrupt by SIGINT (exit 130 in a shell)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    return status
