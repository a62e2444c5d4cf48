"""``raymaker up | down | status`` without Ray: ports, the environment a cluster starts with, the
authentication token, the record of a running cluster, stopping exactly its processes (a fake
``ray start``), which cluster ``ensure_ray`` joins, and the commands' answers when nothing is up."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raymaker.cli import build_parser, main
from raymaker.cli.cluster import how_to_reach
from raymaker.cluster import haproxy, local
from raymaker.cluster.runtime import join_address, ray_env_for_serving

# --- ports ----------------------------------------------------------------------------------------


def test_free_port_is_free_and_a_listener_is_seen():
    port = local.free_port()
    assert local.port_free(port) and not local.listening(f"127.0.0.1:{port}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not local.port_free(port) and local.listening(f"127.0.0.1:{port}")
    assert not local.listening("not-an-address")


def test_choose_port_keeps_what_was_asked_else_the_default_else_a_free_one():
    default = local.free_port()
    assert local.choose_port(default, 8265) == (default, None)  # asked for: used as is
    assert local.choose_port(None, default) == (default, None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", default))
        sock.listen()
        port, why = local.choose_port(None, default)
        assert port != default and why == f"port {default} is in use, so {port} instead"
        with pytest.raises(ValueError, match=f"port {default} is in use"):
            local.choose_port(default, 8265)  # asked for but taken: said at once
        assert not local.port_free(default, "0.0.0.0")


# --- environment ----------------------------------------------------------------------------------


def test_serving_env_haproxy_with_free_stats_and_metrics_ports():
    env: dict[str, str] = {}
    ray_env_for_serving(env)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "30"  # a slow proxy start is not killed at 15 s
    ports = [int(env[name]) for name in local.HAPROXY_PORTS]
    assert len(set(ports)) == 2 and {8404, 9101}.isdisjoint(ports)
    assert all(local.port_free(p) for p in ports)


def test_serving_env_keeps_what_the_user_set():
    env = {
        "RAYMAKER_RUNTIME_URL": "https://127.0.0.1:8443",
        "RAY_SERVE_HAPROXY_STATS_PORT": "18404",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30",
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "7",
    }
    local.serving_env(env)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"  # HAProxy does not terminate TLS
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "30"
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "7"
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] not in ("18404", "9101")


def test_ray_env_train_interval_unless_set():
    env: dict[str, str] = {}
    local.ray_env(env)
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1"
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1"}
    local.ray_env(env)
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "1"


def test_cluster_env(tmp_path):
    caller = {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "RAYMAKER_RUNTIME_URL": "http://127.0.0.1:8081",
        "RAY_ADDRESS": "10.0.0.1:6379",
        "OTHER": "x",
    }
    home = tmp_path / "a" / ".." / "home"
    env = local.cluster_env(caller, home=home, cluster_id="abc", python="/venv/bin/python")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["OTHER"] == "x"  # all carried
    assert env["RAYMAKER_HOME"] == str((tmp_path / "home").resolve())  # pinned, absolute
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin"  # a Ray job's `python` is raymaker's
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert all(env[name] for name in local.HAPROXY_PORTS)
    assert env[local.MARKER] == "abc" and "RAY_ADDRESS" not in env
    assert "RAY_ADDRESS" in caller and local.MARKER not in caller  # the caller's is left alone
    again = local.cluster_env(
        {**caller, "PATH": env["PATH"]}, home=home, cluster_id="x", python="/venv/bin/py"
    )
    assert again["PATH"] == env["PATH"]  # not prepended twice
    chosen = local.cluster_env({"RAY_AUTH_MODE": "disabled"}, home=home, cluster_id="x", python="/b/python")
    assert chosen["RAY_AUTH_MODE"] == "disabled" and chosen["PATH"] == "/b"
    assert local.carried_settings({**caller, local.MARKER: "abc"}) == [
        "AWS_ACCESS_KEY_ID",
        "AWS_ENDPOINT_URL",
        "RAYMAKER_RUNTIME_URL",
    ]


def test_default_ray_temp_dir():
    assert local.default_ray_temp_dir({"RAY_TMPDIR": "/x"}) == "/x/ray"
    assert local.default_ray_temp_dir({}) == "/tmp/ray"


def test_ray_start_command_pins_every_fixed_port():
    cmd = local.ray_start_command(
        gcs_port=1, dashboard_port=2, agent_port=3, client_port=4, num_cpus=2.0, temp_dir="/t", python="/py"
    )
    assert cmd[:6] == ["/py", "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    for arg in (
        "--port=1",
        "--dashboard-port=2",
        "--dashboard-agent-listen-port=3",
        "--ray-client-server-port=4",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--num-cpus=2",
        "--temp-dir=/t",
    ):
        assert arg in cmd
    bare = local.ray_start_command(gcs_port=1, dashboard_port=2, agent_port=3, client_port=4)
    assert not any(a.startswith(("--num-cpus", "--temp-dir")) for a in bare)


# --- token ----------------------------------------------------------------------------------------


def test_token_is_found_where_ray_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local.read_token({}) is None
    assert local.token_source({}) == str(tmp_path / ".ray" / "auth_token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    (tmp_path / "t").write_text("path-token")
    assert local.read_token({}) == "home-token"
    assert local.read_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}) == "path-token"
    assert local.read_token({"RAY_AUTH_TOKEN": "env", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}) == "env"
    assert local.token_source({"RAY_AUTH_TOKEN": "env"}) == "the RAY_AUTH_TOKEN environment variable"


def test_ensure_token_writes_one_only_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local.ensure_token({}) is True
    path = tmp_path / ".ray" / "auth_token"
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local.ensure_token({}) is False and path.read_text() == token  # never over another
    assert local.ensure_token({"RAY_AUTH_TOKEN": "given"}) is False
    other = tmp_path / "other"
    assert local.ensure_token({"RAY_AUTH_TOKEN_PATH": str(other)}) is True and len(other.read_text()) == 64
    path.write_text("")  # an empty file is no token
    assert local.ensure_token({}) is True and len(path.read_text()) == 64


# --- the record, joining ----------------------------------------------------------------------------


def _cluster(**changes) -> local.LocalCluster:
    values = dict(
        pid=123,
        gcs_address="192.0.2.2:6379",
        dashboard_url="http://127.0.0.1:8265",
        cluster_id="abc",
        auth_mode="token",
        home="/h",
        temp_dir="/tmp/ray",
    )
    return local.LocalCluster(**{**values, **changes})


def test_record_round_trip_and_what_it_prints():
    cluster = _cluster(carried=["AWS_ENDPOINT_URL"])
    again = local.LocalCluster.from_json(cluster.to_json().replace("{", '{"from_a_later_version": 1,', 1))
    assert again == cluster
    assert cluster.submit_command() == (
        "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python driver.py"
    )
    assert cluster.cli_exports() == ["export RAY_AUTH_MODE=token"]
    assert _cluster(auth_mode="disabled").cli_exports() == []
    text = "\n".join(how_to_reach(cluster))
    for line in (
        "dashboard:       http://127.0.0.1:8265",
        "export RAY_AUTH_MODE=token",
        "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python driver.py",
        "ray status --address 192.0.2.2:6379",
        "raymaker down",
    ):
        assert line in text
    assert "RAY_AUTH_MODE" not in "\n".join(how_to_reach(_cluster(auth_mode="disabled")))


def test_join_address():
    cluster = _cluster()
    assert join_address({}, None) is None  # a private cluster (or one `ray.init()` finds)
    assert join_address({"RAY_ADDRESS": "10.0.0.1:6379"}, None) == "10.0.0.1:6379"
    assert join_address({}, cluster) == "192.0.2.2:6379"
    assert join_address({"RAY_ADDRESS": "127.0.0.1:6379"}, cluster) == "192.0.2.2:6379"
    assert join_address({"RAY_ADDRESS": "localhost:6379"}, cluster) == "192.0.2.2:6379"
    assert join_address({"RAY_ADDRESS": "10.0.0.1:6379"}, cluster) == "10.0.0.1:6379"  # set: it wins
    assert not local.same_address("127.0.0.1:6380", "192.0.2.2:6379")


def test_no_record_is_no_cluster(tmp_path):
    assert local.read_state(tmp_path) is None and local.running(tmp_path) is None
    local.state_dir(tmp_path).mkdir()
    local.state_file(tmp_path).write_text("not json")
    assert local.running(tmp_path) is None
    local.state_file(tmp_path).write_text(_cluster(pid=2**22 + 7).to_json())  # no such process
    assert local.running(tmp_path) is None


# --- down: exactly the cluster's processes ----------------------------------------------------------

FAKE_RAY_START = textwrap.dedent(
    """
    import os, socket, subprocess, sys, time
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    # a process in a session of its own, as a Ray job's driver: found by the marker in its environment
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # in the group
    time.sleep(60)
    """
)


def test_down_stops_the_process_group_and_every_marked_process(tmp_path, monkeypatch, capsys):
    env = {**os.environ, local.MARKER: "fake-cluster"}
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_RAY_START, "start", "--head", "--block"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        port = int(fake.stdout.readline())
        cluster = _cluster(pid=fake.pid, gcs_address=f"127.0.0.1:{port}", cluster_id="fake-cluster")
        cluster.temp_dir = str(tmp_path / "ray")
        Path(cluster.temp_dir).mkdir()
        (Path(cluster.temp_dir) / "ray_current_cluster").write_text(cluster.gcs_address)
        local.state_dir(tmp_path).mkdir()
        local.state_file(tmp_path).write_text(cluster.to_json())
        deadline = time.monotonic() + 10
        while len(local.processes_of(cluster)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(local.processes_of(cluster)) == 3
        assert local.running(tmp_path) == cluster
        assert local.up(home=tmp_path) == (cluster, False)  # up already: nothing started
        monkeypatch.setenv("RAYMAKER_HOME", str(tmp_path))
        assert main(["up"]) == 0
        assert f"already up (pid {fake.pid})" in capsys.readouterr().out

        assert local.down(tmp_path, timeout=5) == cluster
        assert fake.wait(timeout=5) is not None
        assert local.processes_of(cluster) == [] and bystander.poll() is None
        assert local.read_state(tmp_path) is None
        assert not (Path(cluster.temp_dir) / "ray_current_cluster").exists()
        assert local.down(tmp_path) is None  # nothing up: nothing to do
    finally:
        for proc in (fake, bystander):
            proc.kill()
            proc.wait()


# --- the commands -----------------------------------------------------------------------------------


def test_commands_when_nothing_is_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAYMAKER_HOME", str(tmp_path))
    assert main(["status"]) == 3
    assert "no local cluster is up" in capsys.readouterr().out
    assert main(["down"]) == 0
    assert "no local cluster is up" in capsys.readouterr().out


def test_up_options():
    args = build_parser().parse_args(
        ["up", "--num-cpus", "2", "--dashboard-port", "8266", "--temp-dir", "/t"]
    )
    assert (args.num_cpus, args.dashboard_port, args.port, args.temp_dir) == (2.0, 8266, None, "/t")
    assert build_parser().parse_args(["status", "--json"]).json is True


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert command in capsys.readouterr().out


def test_the_haproxy_wrapper_for_clusters_raymaker_does_not_start(tmp_path):
    """A node started by a cluster definition (aws.yaml's start command, kuberay.yaml's image) gets the
    wrapper from ``python -m raymaker.cluster.haproxy``: Serve's stats and metrics binds move to
    127.0.0.1, the ingress's stays where Serve put it."""
    out = tmp_path / "bin" / "haproxy-loopback"
    # Made where Serve's variable already names a wrapper (an environment set up before): the new one
    # runs the real binary, not that wrapper (which would run itself forever, Serve's HAProxy never up).
    earlier = haproxy.loopback_wrapper(tmp_path / "earlier")
    # Serve's default stats and metrics ports (an earlier test may have chosen others in this process).
    env = {**{k: v for k, v in os.environ.items() if k not in local.HAPROXY_PORTS}, haproxy.BINARY_ENV: earlier}
    done = subprocess.run([sys.executable, "-m", "raymaker.cluster.haproxy", "--out", str(out)],
                          capture_output=True, text=True, check=True, env=env, timeout=60)
    assert done.stdout.strip() == str(out) and os.access(out, os.X_OK)
    assert haproxy._wrapped(str(out)) == haproxy._wrapped(earlier) == haproxy.real_binary()
    assert haproxy._wrapped(haproxy.real_binary()) is None  # the real binary, no wrapper
    # Written again in place while the variable names it (how CI hung once): still the real binary.
    subprocess.run([sys.executable, "-m", "raymaker.cluster.haproxy", "--out", earlier], check=True, env=env,
                   capture_output=True, timeout=60)
    assert haproxy._wrapped(earlier) == haproxy.real_binary()
    # A wrapper left running itself (as that bug wrote it) is passed over for the next place Serve looks.
    looping = tmp_path / "looping"
    looping.write_text(haproxy._WRAPPER.replace("__REAL__", str(looping)))
    looping.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(haproxy.BINARY_ENV, str(looping))
        assert haproxy.real_binary() == haproxy._wrapped(earlier)
    config = tmp_path / "haproxy.cfg"
    config.write_text("frontend stats\n    bind *:8404\nfrontend prometheus\n  bind *:9101\n"
                      "frontend http\n    bind *:8000\n")
    version = subprocess.run([str(out), "-f", str(config), "-v"], capture_output=True, text=True, check=True,
                             env=env, timeout=60)
    assert "HAProxy version" in version.stdout  # the real binary ran, with the same arguments
    text = config.read_text()
    assert "bind 127.0.0.1:8404" in text and "bind 127.0.0.1:9101" in text and "bind *:8000" in text
    aws = (Path(__file__).parents[1] / "cluster" / "aws.yaml").read_text()
    assert "RAY_SERVE_HAPROXY_BINARY_PATH=$(python3 -m raymaker.cluster.haproxy)" in aws
    # Heads started by a definition, not by raymaker, carry Serve's patience with a slow proxy too.
    timeout = f"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S={local.PROXY_READY_CHECK_TIMEOUT_S}"
    assert timeout in aws
    kuberay = (Path(__file__).parents[1] / "cluster" / "kuberay.yaml").read_text()
    assert f'{{name: RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S, value: "{local.PROXY_READY_CHECK_TIMEOUT_S}"}}' in kuberay
