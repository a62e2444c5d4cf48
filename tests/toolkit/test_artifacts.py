"""model.tar.gz and output.tar.gz from a script's tree, one host or several merged, on the real S3
test server and file://."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from raymaker.io.storage import storage_for
from raymaker.toolkit.artifacts import host_archive_uri, package_outputs, upload_host_outputs
from raymaker.toolkit.paths import MLTree


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def members(uri: str) -> dict[str, bytes | None]:
    """name -> content (None for a directory) of the gzipped tar at ``uri``."""
    data = storage_for(uri).read_bytes(uri)
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            assert m.name not in out, f"{m.name} twice in {uri}"
            out[m.name] = None if m.isdir() else tar.extractfile(m).read()
    return out


def test_one_host_model_and_empty_output(s3_server, s3_bucket, tmp_path):
    tree = MLTree(str(tmp_path / "ml")).make()
    write(os.path.join(tree.model_dir, "model.pth"), b"weights")
    write(os.path.join(tree.model_dir, "code", "inference.py"), b"def model_fn(d): ...\n")
    output_uri = f"s3://{s3_bucket}/out/job-1/output"
    result = package_outputs(tree, output_uri, None)

    assert result["model"]["uri"] == f"{output_uri}/model.tar.gz"
    assert result["output"]["uri"] == f"{output_uri}/output.tar.gz"
    assert members(result["model"]["uri"]) == {
        "code": None,
        "code/inference.py": b"def model_fn(d): ...\n",
        "model.pth": b"weights",
    }
    # No output data: output.tar.gz is still written, empty.
    assert members(result["output"]["uri"]) == {}
    for kind in ("model", "output"):
        head = s3_server.client.head_object(Bucket=s3_bucket, Key=f"out/job-1/output/{kind}.tar.gz")
        assert head["ContentLength"] == result[kind]["size"] > 0
    assert result["collisions"] == []


def test_output_data_and_a_file_uri(tmp_path):
    tree = MLTree(str(tmp_path / "ml")).make()
    write(os.path.join(tree.output_data_dir, "metrics.json"), b"{}")
    write(os.path.join(tree.model_dir, "m"), b"m")
    write(tree.failure_file, b"not an artifact")
    dest = tmp_path / "s3" / "job" / "output"
    result = package_outputs(tree, dest.as_uri(), None)
    assert members(str(dest / "output.tar.gz")) == {"metrics.json": b"{}"}
    assert members(str(dest / "model.tar.gz")) == {"m": b"m"}
    assert result["output"]["size"] == os.path.getsize(dest / "output.tar.gz")


def test_two_hosts_merge_and_the_later_host_wins_a_collision(s3_server, s3_bucket, tmp_path):
    output_uri = f"s3://{s3_bucket}/out/job-2/output"
    hosts = {}
    for host in ("algo-1", "algo-2"):
        tree = hosts[host] = MLTree(str(tmp_path / host)).make()
        write(os.path.join(tree.model_dir, f"{host}.bin"), host.encode())
        write(os.path.join(tree.model_dir, "shared", "config.json"), f'{{"host": "{host}"}}'.encode())
        write(os.path.join(tree.output_data_dir, f"{host}.log"), b"log")

    sent = upload_host_outputs(hosts["algo-2"], output_uri, None, host="algo-2")
    assert sent["model"]["uri"] == host_archive_uri(output_uri, "algo-2", "model")
    assert sent["model"]["uri"] == f"{output_uri}/.hosts/algo-2-model.tar.gz"

    result = package_outputs(hosts["algo-1"], output_uri, None, other_hosts=["algo-2"])
    assert members(result["model"]["uri"]) == {
        "algo-1.bin": b"algo-1",
        "algo-2.bin": b"algo-2",
        "shared": None,
        "shared/config.json": b'{"host": "algo-2"}',
    }
    assert members(result["output"]["uri"]) == {"algo-1.log": b"log", "algo-2.log": b"log"}
    assert result["collisions"] == ["model: shared/config.json from algo-1 replaced by algo-2"]
    # As an endpoint unpacks it.
    with tarfile.open(
        fileobj=io.BytesIO(storage_for(result["model"]["uri"]).read_bytes(result["model"]["uri"]))
    ) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert (tmp_path / "unpacked" / "shared" / "config.json").read_bytes() == b'{"host": "algo-2"}'
    # The per-host uploads are gone; only the job's two archives remain.
    keys = [
        o["Key"] for o in s3_server.client.list_objects_v2(Bucket=s3_bucket, Prefix="out/job-2/")["Contents"]
    ]
    assert sorted(keys) == ["out/job-2/output/model.tar.gz", "out/job-2/output/output.tar.gz"]


def test_a_missing_host_or_a_file_against_a_directory_is_an_error(s3_bucket, tmp_path):
    output_uri = f"s3://{s3_bucket}/out/job-3/output"
    first = MLTree(str(tmp_path / "algo-1")).make()
    with pytest.raises(
        FileNotFoundError, match=r"host algo-2's model archive .*/\.hosts/algo-2-model\.tar\.gz is missing"
    ):
        package_outputs(first, output_uri, None, other_hosts=["algo-2"])

    write(os.path.join(first.model_dir, "weights"), b"file here")
    second = MLTree(str(tmp_path / "algo-2")).make()
    write(os.path.join(second.model_dir, "weights", "part-0"), b"directory there")
    upload_host_outputs(second, output_uri, None, host="algo-2")
    with pytest.raises(ValueError, match="'weights' is a file on algo-1 and a dir on algo-2"):
        package_outputs(first, output_uri, None, other_hosts=["algo-2"])


def test_hard_links_and_symlinks_in_model_dir(tmp_path):
    tree = MLTree(str(tmp_path / "ml")).make()
    write(os.path.join(tree.model_dir, "a.bin"), b"same bytes")
    os.link(os.path.join(tree.model_dir, "a.bin"), os.path.join(tree.model_dir, "b.bin"))
    os.symlink("a.bin", os.path.join(tree.model_dir, "latest"))
    os.mkfifo(os.path.join(tree.model_dir, "a-fifo"))  # not an artifact: left out
    other = MLTree(str(tmp_path / "algo-2")).make()
    write(os.path.join(other.model_dir, "c.bin"), b"c")
    out = tmp_path / "out"
    upload_host_outputs(other, str(out), None, host="algo-2")
    package_outputs(tree, str(out), None, other_hosts=["algo-2"])
    with tarfile.open(out / "model.tar.gz") as tar:
        names = {m.name: m for m in tar}
        assert sorted(names) == ["a.bin", "b.bin", "c.bin", "latest"]
        assert names["b.bin"].isreg() and tar.extractfile("b.bin").read() == b"same bytes"
        assert names["latest"].issym() and names["latest"].linkname == "a.bin"
