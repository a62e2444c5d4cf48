"""Which container runtime a node has and what it is asked to do.

podman and docker take the same command lines for everything used here, so one ``Runtime`` (the
binary's path and name) builds them. ``RAYMAKER_CONTAINER_RUNTIME`` (``podman``, ``docker`` or a path)
chooses; otherwise podman if installed, else docker. Images are pulled with the runtime's own
credentials (``podman login`` / ``docker login``), never ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RUNTIME_ENV = "RAYMAKER_CONTAINER_RUNTIME"
# podman on hosts whose default OCI runtime (crun) or cgroup manager (systemd) does not work, as on
# containers inside containers: RAYMAKER_CONTAINER_OCI_RUNTIME=runc adds ``--runtime runc``.
OCI_RUNTIME_ENV = "RAYMAKER_CONTAINER_OCI_RUNTIME"
LABEL = "io.raymaker.owner"  # on every container raymaker starts: what it belongs to
PULL_TIMEOUT_S = 900.0


class ContainerRuntimeError(RuntimeError):
    """The runtime is missing, or refused: the message says what to install or change."""


@dataclass(frozen=True)
class Runtime:
    path: str
    name: str  # "podman" or "docker"
    oci_runtime: str | None = None

    def base_command(self) -> list[str]:
        """The runtime's binary with its global options (podman: the OCI runtime, if one is set)."""
        return [self.path, *(["--runtime", self.oci_runtime] if self.oci_runtime and self.name == "podman" else [])]

    # --- images ---------------------------------------------------------------------------------

    def image_exists(self, image: str) -> bool:
        if self.name == "podman":
            return self._run(["image", "exists", image], check=False).returncode == 0
        return self._run(["image", "inspect", image], check=False).returncode == 0

    def pull(self, image: str) -> None:
        """Pull ``image`` with the runtime's own login; ContainerRuntimeError with its words if it cannot."""
        done = self._run(["pull", "-q", image], check=False, timeout=PULL_TIMEOUT_S)
        if done.returncode != 0:
            why = _last_error(done.stderr) or f"exit code {done.returncode}"
            raise ContainerRuntimeError(
                f"image {image!r} is not on this node and {self.name} could not pull it: {why}. Push it to "
                f"a registry this node can reach (and `{self.name} login` to it), or load an archive with "
                "`raymaker images load FILE`"
            )

    def ensure_image(self, image: str) -> None:
        """The image is here after this (pulled if need be), or ContainerRuntimeError."""
        if not self.image_exists(image):
            self.pull(image)

    def load(self, archive: str) -> list[str]:
        """Load a ``docker save`` / ``podman save`` archive; returns the images it named."""
        if not os.path.isfile(archive):
            raise ContainerRuntimeError(f"{archive} is not a file: give an image archive (docker save / podman save)")
        done = self._run(["load", "-i", archive], check=False, timeout=PULL_TIMEOUT_S)
        if done.returncode != 0:
            raise ContainerRuntimeError(
                f"{self.name} could not load {archive}: {_last_error(done.stderr) or done.returncode}"
            )
        names = []
        for line in done.stdout.splitlines():
            if line.startswith("Loaded image"):  # "Loaded image: x:1" / "Loaded image(s): x:1,y:2"
                names += [n.strip() for n in line.split(":", 1)[1].split(",") if n.strip()]
        return names

    def images(self) -> list[dict[str, str]]:
        """The node's images: ``{"Image", "Id", "Created", "Size"}`` each."""
        done = self._run(["images", "--format", "{{json .}}"], check=False)
        if done.returncode != 0:
            raise ContainerRuntimeError(f"{self.name} images failed: {_last_error(done.stderr)}")
        rows = []
        text = done.stdout.strip()
        items = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x]
        for item in items:
            repo = item.get("Repository")
            names = item.get("Names") or ([f"{repo}:{item.get('Tag')}"] if repo and repo != "<none>" else ["<none>"])
            for name in names:
                rows.append({
                    "Image": name,
                    "Id": str(item.get("Id") or item.get("ID") or "")[:12],
                    "Created": str(item.get("CreatedAt") or item.get("CreatedSince") or ""),
                    "Size": str(item.get("Size") or ""),
                })
        return rows

    def has_gpu_support(self) -> bool:
        """Whether containers here can be given NVIDIA GPUs: podman through a CDI specification
        (``nvidia-ctk cdi generate``), docker through the nvidia runtime."""
        if self.name == "podman":
            return any(
                os.path.isdir(d) and any(f.startswith("nvidia") for f in os.listdir(d))
                for d in ("/etc/cdi", "/var/run/cdi")
            )
        done = self._run(["info", "--format", "{{json .Runtimes}}"], check=False)
        return done.returncode == 0 and "nvidia" in done.stdout

    # --- containers -----------------------------------------------------------------------------

    def run_command(
        self,
        image: str,
        args: Sequence[str],
        *,
        name: str,
        owner: str,
        env: Mapping[str, str],
        mounts: Sequence[tuple[str, str, bool]] = (),
        hostname: str | None = None,
        hosts: Mapping[str, str] | None = None,
        cpus: float | None = None,
        memory_mib: int | None = None,
        gpus: Sequence[int | str] = (),
        entrypoint: Sequence[str] | None = None,
        network: str = "host",
        publish: Sequence[tuple[str, int, int]] = (),
    ) -> list[str]:
        """``<runtime> run`` in the foreground (its output is the container's), removed when it ends, on
        the host's network by default (SageMaker's instances each have their own address; ``hosts`` names
        them), with ``mounts`` as (host path, container path, read-only). ``publish``: (host address, host
        port, container port) for a container on a network of its own (``network="bridge"``).
        ``entrypoint`` overrides the image's ENTRYPOINT (its first element; the rest go before ``args``),
        as ContainerEntrypoint does."""
        cmd = self.base_command()
        cmd += ["run", "--rm", "--name", name, "--label", f"{LABEL}={owner}", "--network", network]
        for address, host_port, container_port in publish:
            cmd += ["-p", f"{address}:{host_port}:{container_port}"]
        # Its output reaches us through the attached run; no runtime log file grows with it.
        cmd += ["--log-driver", "none"]
        if hostname:
            cmd += ["--hostname", hostname]
        for host, address in (hosts or {}).items():
            cmd += ["--add-host", f"{host}:{address}"]
        if cpus:
            cmd += ["--cpus", f"{cpus:g}"]
        if memory_mib:
            cmd += ["--memory", f"{int(memory_mib)}m"]
        if gpus:
            if self.name == "podman":
                cmd += [arg for g in gpus for arg in ("--device", f"nvidia.com/gpu={g}")]
            else:
                cmd += ["--gpus", "device=" + ",".join(map(str, gpus))]
        for source, target, read_only in mounts:
            cmd += ["-v", f"{source}:{target}:{'ro' if read_only else 'rw'}"]
        for key in env:  # values travel in the child's environment, not on the command line (ps shows it)
            cmd += ["-e", key]
        rest = list(args)
        if entrypoint:
            cmd += ["--entrypoint", entrypoint[0]]
            rest = [*entrypoint[1:], *rest]
        return [*cmd, image, *rest]

    def stop(self, name: str, grace_s: float) -> None:
        """SIGTERM to the container's process, SIGKILL after ``grace_s`` (``docker stop -t``)."""
        self._run(["stop", "-t", str(max(0, int(grace_s))), name], check=False, timeout=grace_s + 60)

    def kill(self, name: str, signal: str = "KILL") -> None:
        self._run(["kill", "--signal", signal, name], check=False)

    def remove(self, name: str) -> None:
        """Remove the container whatever its state (nothing if it is already gone)."""
        self._run(["rm", "-f", "-t", "0", name] if self.name == "podman" else ["rm", "-f", name], check=False)

    def owned(self, owner: str) -> list[str]:
        """The ids of the running containers raymaker started for ``owner``."""
        done = self._run(["ps", "-q", "--no-trunc", "--filter", f"label={LABEL}={owner}"], check=False)
        return done.stdout.split()

    def running(self, name: str) -> bool:
        done = self._run(["inspect", "--format", "{{.State.Running}}", name], check=False)
        return done.returncode == 0 and done.stdout.strip() == "true"

    def _run(self, args: Sequence[str], *, check: bool, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base_command(), *args], capture_output=True, text=True, check=check, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def find_runtime(environ: Mapping[str, str] | None = None) -> Runtime:
    """The node's runtime: ``RAYMAKER_CONTAINER_RUNTIME`` if set, else podman, else docker."""
    environ = os.environ if environ is None else environ
    chosen = (environ.get(RUNTIME_ENV) or "").strip()
    oci = (environ.get(OCI_RUNTIME_ENV) or "").strip() or None
    candidates = [chosen] if chosen else ["podman", "docker"]
    for candidate in candidates:
        path = shutil.which(candidate, path=environ.get("PATH")) if not os.path.isabs(candidate) else candidate
        if path and os.access(path, os.X_OK):
            base = os.path.basename(path)
            return Runtime(path, "docker" if "docker" in base else "podman", oci)
    if chosen:
        raise ContainerRuntimeError(
            f"{RUNTIME_ENV}={chosen!r} names no executable on this node: install it, or unset {RUNTIME_ENV} "
            "to use podman or docker, whichever is installed"
        )
    raise ContainerRuntimeError(
        "custom containers need a container runtime on every node, and this one has neither podman nor "
        "docker: install podman (Debian/Ubuntu: apt-get install podman runc) or Docker Engine"
    )


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    return (errors or lines or [""])[-1][:500]
