"""The container runtime seam on its own (no Ray): finding podman or docker, the command lines it
builds, images loaded and listed through ``raymaker images``, and a serving container's life."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import pytest

from raymaker.cli import main
from raymaker.containers.runtime import ContainerRuntimeError, Runtime, find_runtime
from raymaker.serve.codecs import InvocationError
from raymaker.serve.container import ContainerServer
from raymaker.testing.images import HANDLE, build_busybox_image
from raymaker.toolkit.container import container_failure

IMAGE = "localhost/raymaker-test-runtime:1"


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return find_runtime()


@pytest.fixture(scope="module")
def image(runtime) -> str:
    return build_busybox_image(IMAGE, runtime)


def test_no_runtime_names_what_to_install(tmp_path):
    with pytest.raises(ContainerRuntimeError) as info:
        find_runtime({"PATH": str(tmp_path)})
    assert "neither podman nor docker" in str(info.value) and "apt-get install podman" in str(info.value)
    with pytest.raises(ContainerRuntimeError) as info:
        find_runtime({"PATH": str(tmp_path), "RAYMAKER_CONTAINER_RUNTIME": "docker"})
    assert "RAYMAKER_CONTAINER_RUNTIME='docker' names no executable" in str(info.value)


def test_the_setting_or_podman_then_docker_is_chosen(tmp_path):
    for name in ("docker", "podman"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    assert find_runtime({"PATH": str(tmp_path)}).name == "podman"
    chosen = find_runtime({"PATH": str(tmp_path), "RAYMAKER_CONTAINER_RUNTIME": "docker"})
    assert (chosen.name, chosen.path) == ("docker", str(tmp_path / "docker"))
    os.remove(tmp_path / "podman")
    assert find_runtime({"PATH": str(tmp_path)}).name == "docker"


def test_run_command_follows_the_contract():
    podman = Runtime("/usr/bin/podman", "podman", "runc")
    cmd = podman.run_command("img:1", ["train"], name="n", owner="job", env={"A": "secret"},
                             mounts=[("/tmp/t", "/opt/ml", False)], hostname="algo-2",
                             hosts={"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}, cpus=4, memory_mib=16384,
                             gpus=[0, 1], entrypoint=["python3", "/opt/train.py"])
    assert cmd[:3] == ["/usr/bin/podman", "--runtime", "runc"]
    assert cmd[-3:] == ["img:1", "/opt/train.py", "train"]  # the entrypoint's arguments, then ours
    joined = " ".join(cmd)
    for part in ("--hostname algo-2", "--add-host algo-1:10.0.0.1", "--cpus 4", "--memory 16384m",
                 "--device nvidia.com/gpu=0", "--device nvidia.com/gpu=1", "-v /tmp/t:/opt/ml:rw",
                 "--entrypoint python3", "-e A", "--network host", "--rm"):
        assert part in joined, part
    assert "secret" not in joined  # values travel in the environment, not on the command line
    docker = Runtime("/usr/bin/docker", "docker").run_command("img:1", ["serve"], name="n", owner="o", env={},
                                                              gpus=[0])
    assert "--gpus device=0" in " ".join(docker) and docker[-2:] == ["img:1", "serve"]


def test_images_load_and_list_through_the_cli(runtime, image, tmp_path, capsys):
    archive = str(tmp_path / "image.tar")
    subprocess.run([*runtime.base_command(), "save", "-o", archive, image], check=True, capture_output=True)
    subprocess.run([*runtime.base_command(), "rmi", "-f", image], check=True, capture_output=True)
    assert not runtime.image_exists(image)
    assert main(["images", "load", archive]) == 0
    assert f"loaded {image}" in capsys.readouterr().out
    assert runtime.image_exists(image)
    assert main(["images", "list"]) == 0
    assert image in capsys.readouterr().out
    assert main(["images", "load", str(tmp_path / "missing.tar")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_gpu_support_and_failure_wording(runtime):
    assert runtime.has_gpu_support() is False  # this machine: no NVIDIA toolkit
    reason = container_failure(runtime, "img:1", 125, ["Error: short-name resolution failed"])
    assert reason.startswith("ClientError: podman could not run img:1: Error:")
    assert container_failure(runtime, "img:1", 1, ["boom"]) == "AlgorithmError: boom, exit code: 1"


def test_a_serving_container_restarts_and_a_dead_one_fails_to_start(runtime, image, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    server = ContainerServer(image, str(model), {"MODEL_TAG": "t"}, name="raymaker-test-srv", owner="test-srv")
    try:
        assert server.healthy and server.ping()
        body, ct, _ = server.invoke(b"1,2\n", "text/csv", None)
        assert (body, ct) == (b"3\n", "text/csv")
        with pytest.raises(InvocationError) as info:
            server.invoke(b"boom", "text/csv", None)
        assert info.value.status == 424 and "Received server error (500)" in info.value.message
        (cid,) = runtime.owned("test-srv")
        runtime.kill(cid)
        done = threading.Event()
        threading.Timer(30, done.set).start()
        while server.restarts == 0 and not done.is_set():
            done.wait(0.05)
        assert server.restarts == 1
        assert server.invoke(b"2,2\n", "text/csv", None)[0] == b"4\n"  # waits for the new container
        assert runtime.owned("test-srv") not in ([], [cid])
    finally:
        server.close()
    assert runtime.owned("test-srv") == []
    assert "serve: got SIGTERM" in server.output  # closed as SageMaker stops one: SIGTERM first

    broken = build_busybox_image("localhost/raymaker-test-broken:1", runtime, scripts={
        "/usr/bin/serve": "#!/bin/sh\necho 'cannot load the model' >&2\nexit 1\n", "/usr/bin/handle": HANDLE})
    with pytest.raises(ContainerRuntimeError) as info:
        ContainerServer(broken, str(model), {}, name="raymaker-test-broken", owner="test-broken")
    assert "exited 3 times before answering GET /ping; its last output: " in str(info.value)
    assert "cannot load the model" in str(info.value)
    assert runtime.owned("test-broken") == []


def test_images_and_gpus_are_checked_before_any_work(image, tmp_path):
    from raymaker.engine.container_job import require_image
    from raymaker.protocol.errors import ValidationError

    assert require_image(image).name in ("podman", "docker")  # present: nothing to pull
    with pytest.raises(ValidationError) as info:  # a GPU instance type, and this runtime cannot give GPUs
        require_image(image, gpus=1)
    assert "cannot give containers GPUs" in str(info.value) and "NVIDIA Container Toolkit" in str(info.value)
    with pytest.raises(ValidationError) as info:
        require_image("localhost/raymaker-no-such-image:1", field="PrimaryContainer.Image")
    assert str(info.value).startswith("PrimaryContainer.Image: image 'localhost/raymaker-no-such-image:1' is "
                                      "not on this node and podman could not pull it")


RUNNER = """
import sys, threading
from raymaker.containers.runtime import find_runtime
from raymaker.toolkit.container import run_in_container
rt = find_runtime()
cmd = rt.run_command(sys.argv[1], ["sleep", sys.argv[3]], name=sys.argv[2], owner=sys.argv[2], env={})
print(run_in_container(cmd, sys.argv[2], rt, env={}, cwd="/", on_line=print, stop=threading.Event(), grace_s=1))
"""


def _guards(name: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if "while kill" in line and name in line]


def test_a_killed_instance_leaves_no_container_and_a_finished_one_no_guard(runtime, image):
    import sys
    import time

    name = "raymaker-test-guard"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, image, name, "300"])
    deadline = time.time() + 30
    while not runtime.running(name):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.kill()  # as Ray kills an actor: no finally runs
    proc.wait()
    deadline = time.time() + 15
    while runtime.running(name):
        assert time.time() < deadline, "the container outlived the process that ran it"
        time.sleep(0.2)
    done = subprocess.run([sys.executable, "-c", RUNNER, image, f"{name}-2", "0"], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "0", done.stderr[-2000:]
    time.sleep(1.5)
    assert _guards(f"{name}-2") == []  # the guard left when the container ended
