"""A finished script's artifacts, uploaded as SageMaker uploads them (sagemaker-contract.md section 2.2):
``model/`` becomes ``<output_uri>/model.tar.gz`` and ``output/data/`` becomes ``<output_uri>/output.tar.gz``,
``output_uri`` being the job's ``<S3OutputPath>/<TrainingJobName>/output``. Members are named relative
to the directory (``model.pth``, ``code/inference.py``), as in the built-in algorithms' archives.

Both archives are always written, an empty directory giving an empty archive: SageMaker documents
``model.tar.gz`` as the job's ``ModelArtifacts`` whatever the script left, and the SageMaker SDK's local
mode (``retrieve_artifacts``) writes both archives unconditionally too; a caller can then rely on both
existing. ``OutputDataConfig.CompressionType: NONE`` (files uploaded uncompressed) is not supported here.

**Several hosts.** SageMaker merges every host's ``model/`` (and ``output/data/``) into one archive and
asks that file names not collide; when they do, the later host's file replaces the earlier one (the
SDK's local mode says so of the service, and does the same). Here:

1. every host but the first calls ``upload_host_outputs(tree, output_uri, settings, host="algo-N")``,
   which uploads its two directories as ``<output_uri>/.hosts/algo-N-model.tar.gz`` and
   ``.../algo-N-output.tar.gz``;
2. once they all have (the caller's barrier), the first host calls
   ``package_outputs(tree, output_uri, settings, other_hosts=["algo-2", ...])``: its own files, then
   each other host's in the order given, later hosts replacing earlier ones on a collision (each one is
   listed in the result's ``collisions``, for the job's log); a name that is a file on one host and a
   directory on another is an error. The ``.hosts/`` objects are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

from raymaker.io.storage import S3Settings, storage_for
from raymaker.toolkit.checkpoints import delete_object
from raymaker.toolkit.paths import MLTree

MODEL_ARCHIVE = "model.tar.gz"
OUTPUT_ARCHIVE = "output.tar.gz"
HOSTS_DIR = ".hosts"


def _kinds(tree: MLTree) -> tuple[tuple[str, str], ...]:
    return (("model", tree.model_dir), ("output", tree.output_data_dir))


def archive_uri(output_uri: str, kind: str) -> str:
    """``<output_uri>/model.tar.gz`` (kind "model") or ``<output_uri>/output.tar.gz`` (kind "output")."""
    return f"{output_uri.rstrip('/')}/{kind}.tar.gz"


def host_archive_uri(output_uri: str, host: str, kind: str) -> str:
    """Where host ``host`` (not the first) leaves its ``kind`` ("model" / "output") archive for the first."""
    return f"{output_uri.rstrip('/')}/{HOSTS_DIR}/{host}-{kind}.tar.gz"


def upload_host_outputs(
    tree: MLTree, output_uri: str, settings: S3Settings | None, *, host: str
) -> dict[str, dict[str, Any]]:
    """A host other than the first: upload its ``model/`` and ``output/data/`` for the first host to
    merge. Returns ``{"model": {"uri", "size"}, "output": {"uri", "size"}}``."""
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="raymaker-artifacts-") as tmp:
        for kind, directory in _kinds(tree):
            uri = host_archive_uri(output_uri, host, kind)
            archive = os.path.join(tmp, f"{kind}.tar.gz")
            _merge([_DirSource(host, directory)], archive)
            storage_for(uri, settings).upload(archive, uri)
            out[kind] = {"uri": uri, "size": os.path.getsize(archive)}
    return out


def package_outputs(
    tree: MLTree,
    output_uri: str,
    settings: S3Settings | None,
    *,
    other_hosts: Sequence[str] = (),
    host: str = "algo-1",
    cleanup: bool = True,
) -> dict[str, Any]:
    """Write ``model.tar.gz`` and ``output.tar.gz`` under ``output_uri`` from this host's tree, merged
    with ``other_hosts``' uploads (``upload_host_outputs``) when there are any; ``host`` names this one
    in collision reports. Returns ``{"model": {"uri", "size"}, "output": {"uri", "size"},
    "collisions": ["model: weights.bin from algo-1 replaced by algo-2", ...]}``."""
    result: dict[str, Any] = {"collisions": []}
    fetched: list[str] = []
    with tempfile.TemporaryDirectory(prefix="raymaker-artifacts-") as tmp:
        for kind, directory in _kinds(tree):
            sources: list[_Source] = [_DirSource(host, directory)]
            for other in other_hosts:
                uri = host_archive_uri(output_uri, other, kind)
                local = os.path.join(tmp, f"{other}-{kind}.tar.gz")
                try:
                    storage_for(uri, settings).download(uri, local)
                except FileNotFoundError as e:
                    raise FileNotFoundError(
                        f"host {other}'s {kind} archive {uri} is missing: every other host must finish "
                        "upload_host_outputs before the first host packages the job's outputs"
                    ) from e
                fetched.append(uri)
                sources.append(_ArchiveSource(other, local))
            archive = os.path.join(tmp, f"{kind}.tar.gz")
            collisions = _merge(sources, archive)
            uri = archive_uri(output_uri, kind)
            storage_for(uri, settings).upload(archive, uri)
            result[kind] = {"uri": uri, "size": os.path.getsize(archive)}
            result["collisions"] += [f"{kind}: {c}" for c in collisions]
    if cleanup:
        for uri in fetched:
            delete_object(uri, settings)
    return result


# ------------------------------------------------------------------------------------------ merging


class _Source:
    host: str

    def names(self) -> Iterator[tuple[str, str]]:
        """(member name, "dir" or "file") in archive order; symlinks count as files."""
        raise NotImplementedError

    def entries(self, out: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        raise NotImplementedError


class _DirSource(_Source):
    """A local directory, walked in ``tarfile.add``'s order (each directory before its sorted contents).
    Regular files, directories and symlinks only: a FIFO or socket left in model/ is not an artifact."""

    def __init__(self, host: str, directory: str):
        self.host, self.directory = host, directory

    def _walk(self) -> Iterator[tuple[str, str]]:
        if not os.path.isdir(self.directory):
            return

        def walk(path: str, prefix: str) -> Iterator[tuple[str, str]]:
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                yield prefix + name, full
                if os.path.isdir(full) and not os.path.islink(full):
                    yield from walk(full, prefix + name + "/")

        yield from walk(self.directory, "")

    def names(self) -> Iterator[tuple[str, str]]:
        for arc, full in self._walk():
            if os.path.islink(full) or os.path.isfile(full):
                yield arc, "file"
            elif os.path.isdir(full):
                yield arc, "dir"

    def entries(self, out: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        for arc, full in self._walk():
            info = out.gettarinfo(full, arc)
            if info is None:
                continue
            if info.islnk():  # a second hard link to a file already added: store the content again,
                info.type, info.linkname = tarfile.REGTYPE, ""  # so every member stands alone when merging
                info.size = os.stat(full).st_size
            if info.isreg():
                with open(full, "rb") as f:
                    yield info, f
            elif info.isdir() or info.issym():
                yield info, None


class _ArchiveSource(_Source):
    """Another host's archive, as ``upload_host_outputs`` wrote it."""

    def __init__(self, host: str, path: str):
        self.host, self.path = host, path

    def _members(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        with tarfile.open(self.path, "r:gz") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if name.startswith(("/", "../")) or name == "..":
                    raise ValueError(
                        f"{self.host}'s archive has a member outside the directory: {member.name!r}"
                    )
                member.name = name
                if member.isdir() or member.isreg() or member.issym():  # all _DirSource writes
                    yield tar, member

    def names(self) -> Iterator[tuple[str, str]]:
        for _, member in self._members():
            yield member.name, "dir" if member.isdir() else "file"

    def entries(self, out: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        for tar, member in self._members():
            if member.isdir() or member.issym():
                yield member, None
                continue
            with contextlib.closing(tar.extractfile(member)) as f:
                yield member, f


def _merge(sources: Sequence[_Source], archive: str) -> list[str]:
    """Write ``sources`` into one gzipped tar at ``archive``; on a name in several sources the last one
    wins. Returns the collisions, as "<name> from <host> replaced by <host>"."""
    owner: dict[str, tuple[str, int]] = {}  # name -> (kind, index of the source whose entry is kept)
    collisions: list[str] = []
    for i, source in enumerate(sources):
        for name, kind in source.names():
            prev = owner.get(name)
            if prev is not None and prev[0] != kind:
                raise ValueError(
                    f"{name!r} is a {prev[0]} on {sources[prev[1]].host} and a {kind} on {source.host}: "
                    "hosts' outputs are merged into one archive, so their names must not clash"
                )
            if prev is not None and kind == "file" and prev[1] != i:
                collisions.append(f"{name} from {sources[prev[1]].host} replaced by {source.host}")
            if prev is None or kind == "file":
                owner[name] = (kind, i)
    written_dirs: set[str] = set()
    with tarfile.open(archive, "w:gz") as out:
        for i, source in enumerate(sources):
            for info, f in source.entries(out):
                if info.isdir():
                    if info.name not in written_dirs:
                        written_dirs.add(info.name)
                        out.addfile(info)
                elif owner[info.name][1] == i:
                    out.addfile(info, f)
    return collisions
