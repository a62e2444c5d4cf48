"""The user's code: sourcedir.tar.gz fetched and extracted, the command the toolkit would run, and
requirements.txt installed once per node from a real (tiny, local) wheel."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile

import pytest

from raymaker.toolkit import entry_point as ep
from raymaker.toolkit.entry_point import (
    InstallError,
    command,
    entry_point_type,
    fetch_source,
    install_requirements,
    prepare,
)


def make_wheel(directory, name: str = "rmdemo", version: str = "1.0", value: int = 42) -> str:
    """A minimal pure-Python wheel (``import <name>; <name>.VALUE``), written by hand so no build
    backend or index is needed."""
    os.makedirs(directory, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: raymaker-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},{digest(d)},{len(d)}\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
    path = os.path.join(str(directory), f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{dist}/RECORD", record)
    return path


def make_sourcedir(path, files: dict[str, str], mode: dict[str, int] | None = None) -> str:
    """A sourcedir.tar.gz as the SageMaker SDK uploads it (files at the archive's root)."""
    with tarfile.open(path, "w:gz") as t:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (mode or {}).get(name, 0o644)
            t.addfile(info, io.BytesIO(data))
    return str(path)


# ------------------------------------------------------------------------------------------ source


def test_fetch_extracts_a_file_uri_tarball(tmp_path):
    tar = make_sourcedir(tmp_path / "sourcedir.tar.gz", {"train.py": "print(1)\n", "lib/util.py": "X = 1\n",
                                                         "run.sh": "echo hi\n"}, mode={"run.sh": 0o755})
    code = tmp_path / "code"
    fetch_source(f"file://{tar}", str(code))
    assert (code / "train.py").read_text() == "print(1)\n"
    assert (code / "lib" / "util.py").read_text() == "X = 1\n"
    assert os.stat(code / "run.sh").st_mode & stat.S_IXUSR  # an executable stays executable


def test_fetch_copies_a_local_directory_and_a_plain_path_tarball(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("x")
    (src / "pkg" / "m.py").write_text("y")
    fetch_source(str(src), str(tmp_path / "a"))
    assert (tmp_path / "a" / "pkg" / "m.py").read_text() == "y"

    tar = make_sourcedir(tmp_path / "s.tar.gz", {"t.py": "z"})
    fetch_source(tar, str(tmp_path / "b"))
    assert (tmp_path / "b" / "t.py").read_text() == "z"


def test_fetch_of_a_missing_sourcedir_names_it(tmp_path):
    uri = f"file://{tmp_path}/nope/sourcedir.tar.gz"
    with pytest.raises(FileNotFoundError, match="sagemaker_submit_directory .*nope/sourcedir.tar.gz does not exist"):
        fetch_source(uri, str(tmp_path / "code"))


def test_fetch_refuses_an_archive_escaping_the_code_dir(tmp_path):
    tar = tmp_path / "evil.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        info = tarfile.TarInfo("../outside.py")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="cannot be extracted"):
        fetch_source(str(tar), str(tmp_path / "code"))
    assert not (tmp_path / "outside.py").exists()


def test_fetch_from_s3(s3_bucket, tmp_path):
    tar = make_sourcedir(tmp_path / "sourcedir.tar.gz", {"train.py": "print('s3')\n"})
    from raymaker.io.storage import storage_for

    uri = f"s3://{s3_bucket}/job/source/sourcedir.tar.gz"
    storage_for(uri).upload(tar, uri)
    fetch_source(uri, str(tmp_path / "code"))
    assert (tmp_path / "code" / "train.py").read_text() == "print('s3')\n"
    with pytest.raises(FileNotFoundError, match=f"s3://{s3_bucket}/job/missing.tar.gz"):
        fetch_source(f"s3://{s3_bucket}/job/missing.tar.gz", str(tmp_path / "code2"))


# ------------------------------------------------------------------------------------------ command


def test_command_per_entry_point_type(tmp_path):
    code = str(tmp_path)
    args = ["--lr", "1 3", "--x", "$HOME"]
    assert command("train.py", code, args) == [sys.executable, "train.py", *args]
    # A shell script runs through /bin/sh with its arguments quoted for it.
    assert command("run.sh", code, args) == ["/bin/sh", "-c", "./run.sh --lr '1 3' --x '$HOME'"]
    assert command("train", code, []) == ["/bin/sh", "-c", "./train "]
    (tmp_path / "setup.py").write_text("")
    assert entry_point_type(code, "train.py") == "python_package"
    assert command("train.py", code, ["-k", "v"]) == [sys.executable, "-m", "train", "-k", "v"]
    assert entry_point_type(code, "run.sh") == "command"  # .sh first, as the toolkit decides


def test_prepare_names_a_missing_entry_point_and_makes_a_command_executable(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "run.sh").write_text("echo hi\n")
    with pytest.raises(ValueError, match=r"entry point 'tran.py' is not in the source directory \(it holds run.sh, train.py\)"):
        prepare("tran.py", str(tmp_path), str(tmp_path / "cache"))
    assert prepare("run.sh", str(tmp_path), str(tmp_path / "cache")) == []
    assert os.access(tmp_path / "run.sh", os.X_OK)
    assert prepare("train.py", str(tmp_path), str(tmp_path / "cache")) == []  # no requirements.txt


# ------------------------------------------------------------------------------------------ requirements


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    d = tmp_path / "wheels"
    make_wheel(d)
    monkeypatch.setenv(ep.FIND_LINKS_ENV, str(d))
    return d


def count_pip_runs(monkeypatch) -> list[list[str]]:
    runs: list[list[str]] = []
    real = ep.run_process

    def counting(cmd, **kw):
        runs.append(list(cmd))
        return real(cmd, **kw)

    monkeypatch.setattr(ep, "run_process", counting)
    return runs


def test_requirements_install_once_into_the_cache(tmp_path, wheels, monkeypatch):
    runs = count_pip_runs(monkeypatch)
    code = tmp_path / "code"
    code.mkdir()
    # numpy is already in the cluster's environment: satisfied there, not installed again.
    (code / "requirements.txt").write_text("rmdemo==1.0\nnumpy\n")
    cache = str(tmp_path / "cache")
    lines: list[str] = []

    site = install_requirements(str(code), cache, on_line=lines.append)
    assert site is not None and site.startswith(cache)
    assert len(runs) == 1 and runs[0][-2:] == ["-r", str(code / "requirements.txt")]
    assert "--no-index" in runs[0] and str(wheels) in runs[0]
    assert os.path.exists(os.path.join(site, "rmdemo.py"))
    assert not any(n.startswith("numpy") for n in os.listdir(site))
    out = subprocess.run([sys.executable, "-c", "import rmdemo; print(rmdemo.VALUE)"],
                         env={**os.environ, "PYTHONPATH": site}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"

    # A second job with the same requirements on this node: no pip at all.
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.txt").write_text("rmdemo==1.0\nnumpy\n")
    assert install_requirements(str(other), cache) == site
    assert len(runs) == 1


def test_two_jobs_installing_at_once_run_pip_once(tmp_path, wheels, monkeypatch):
    runs = count_pip_runs(monkeypatch)
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("rmdemo\n")
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(install_requirements(str(code), str(tmp_path / "c"))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1
    assert len(results) == 2 and results[0] == results[1] and results[0] is not None


def test_failed_install_is_an_install_requirements_error_and_is_not_cached(tmp_path, wheels, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("no-such-package-rm==9.9\n")
    cache = tmp_path / "cache"
    with pytest.raises(InstallError) as e:
        install_requirements(str(code), str(cache))
    assert e.value.reason.startswith("AlgorithmError: InstallRequirementsError:\nExitCode 1\n")
    assert "no-such-package-rm" in e.value.reason
    assert [p for p in os.listdir(cache) if not p.endswith(".lock")] == []  # the next job tries again
