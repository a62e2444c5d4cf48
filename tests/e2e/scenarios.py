"""Scenarios that need a Ray cluster of their own (several nodes, an autoscaler): each runs as a script in
its own process, started in the background as the test session begins (conftest's
``background_scenarios``), so that its cluster's start-up overlaps the other tests; its test module then
waits for the JSON line it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# test module -> scenario script
SCENARIOS = {"test_multinode.py": "multinode_scenario.py", "test_autoscaling.py": "autoscaling_scenario.py"}
TIMEOUT_S = 600

# Nothing of the test session's own Ray (its address, its Serve ports) may leak into a scenario's.
_OWN = (
    "RAY_ADDRESS",
    "RAYMAKER_CLUSTER_CONFIG",
    "RAYMAKER_DEFAULT_BUCKET",
    "RAYMAKER_RUNTIME_URL",
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
)


class Scenario:
    def __init__(self, script: str, bucket: str, home: str):
        env = {k: v for k, v in os.environ.items() if k not in _OWN}
        env.update(
            BUCKET=bucket,
            RAYMAKER_HOME=home,
            PYTHONPATH=str(HERE.parents[1]),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script)], env=env, stdout=self.out, stderr=self.err, text=True
        )

    def result(self) -> dict:
        """What the scenario saw (waits for it to end), with the tail of its stderr and its wall time."""
        try:
            self.proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.seek(0)
        self.err.seek(0)
        stdout, stderr = self.out.read(), self.err.read()[-4000:]
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"the scenario printed nothing (rc {self.proc.returncode})", "stderr": stderr}
        seen = json.loads(lines[-1])
        seen["stderr"] = stderr
        seen["wall_s"] = round(time.monotonic() - self.started, 1)
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
