"""Storage against a real S3 API server (moto's standalone server) and local directories."""

from __future__ import annotations

import pickle

import boto3
import pytest

from raymaker.io.storage import (
    LocalStorage,
    S3Settings,
    S3Storage,
    parse_uri,
    relative_key,
    storage_for,
)

# ------------------------------------------------------------------------------------------- URIs


def test_parse_s3_and_local_uris(tmp_path):
    u = parse_uri("s3://my-bucket/a/b.csv")
    assert (u.scheme, u.bucket, u.key) == ("s3", "my-bucket", "a/b.csv")
    assert str(u) == "s3://my-bucket/a/b.csv"
    assert parse_uri("s3://my-bucket").key == ""
    assert parse_uri(f"file://{tmp_path}/x y.txt").path == f"{tmp_path}/x y.txt"
    assert parse_uri(str(tmp_path)).path == str(tmp_path)
    assert parse_uri(tmp_path).scheme == "file"
    assert parse_uri("relative/dir").path.endswith("/relative/dir")
    # The URI of a local object parses back to the same path, even with characters URIs escape.
    assert parse_uri(str(parse_uri(f"{tmp_path}/a b%20c"))).path == f"{tmp_path}/a b%20c"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3:/bucket/key", "malformed S3 URI 's3:/bucket/key': expected s3://bucket/key"),
        ("s3://", "has no bucket name"),
        ("s3:///key", "has no bucket name"),
        ("s3://Bad_Bucket!/x", "invalid bucket name 'Bad_Bucket!'"),
        ("s3://ab/x", "invalid bucket name 'ab'"),
        ("gs://bucket/x", "unsupported storage scheme 'gs'"),
        ("file://host/x", "use file:///absolute/path"),
        ("", "empty storage URI"),
    ],
)
def test_parse_uri_rejects_malformed(uri, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_uri(uri)


def test_relative_key_follows_prefix_folder():
    assert relative_key("train/", "train/a/b.csv") == "a/b.csv"
    assert relative_key("train", "train/a.csv") == "a.csv"
    assert relative_key("data/train", "data/train-01/a.csv") == "train-01/a.csv"
    assert relative_key("data/file.csv", "data/file.csv") == "file.csv"
    assert relative_key("", "x/y") == "x/y"


def test_storage_for_picks_by_scheme(s3_server, tmp_path):
    assert isinstance(storage_for("s3://bucket/x"), S3Storage)
    assert isinstance(storage_for(str(tmp_path)), LocalStorage)
    assert isinstance(storage_for(f"file://{tmp_path}"), LocalStorage)


# ------------------------------------------------------------------------------------------- S3


def test_s3_list_open_read_round_trip(s3_bucket, tmp_path):
    base = f"s3://{s3_bucket}"
    s = storage_for(base)
    s.put_bytes(f"{base}/train/b.csv", b"2,3\n")
    s.put_bytes(f"{base}/train/a/x.csv", b"line1\nline2\n")
    s.put_bytes(f"{base}/train/", b"")  # a console "folder" marker: not data
    s.put_bytes(f"{base}/train-other/c.csv", b"no")
    s.put_bytes(f"{base}/validation/v.csv", b"v")

    objs = s.list(f"{base}/train/")
    assert [o.relative for o in objs] == ["a/x.csv", "b.csv"]
    assert [o.size for o in objs] == [12, 4]
    assert all(o.etag and '"' not in o.etag for o in objs)
    assert objs[0].uri == f"{base}/train/a/x.csv" and objs[0].key == "train/a/x.csv"
    # S3Prefix semantics: every key starting with the prefix string, in key order.
    assert [o.relative for o in s.list(f"{base}/train")] == ["train-other/c.csv", "a/x.csv", "b.csv"]

    with s.open(f"{base}/train/a/x.csv") as f:
        assert f.readline() == b"line1\n"
        assert f.read() == b"line2\n"
    assert s.read_bytes(f"{base}/train/b.csv") == b"2,3\n"
    assert s.stat(f"{base}/train/b.csv").size == 4

    src = tmp_path / "up.bin"
    src.write_bytes(b"uploaded")
    s.upload(src, f"{base}/out/up.bin")
    s.download(f"{base}/out/up.bin", tmp_path / "d" / "down.bin")
    assert (tmp_path / "d" / "down.bin").read_bytes() == b"uploaded"


def test_s3_large_download_is_pinned_to_the_listed_etag(s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/big.bin"
    s = storage_for(uri)
    data = bytes(range(256)) * (9 * 4096 + 7)  # above the multipart threshold: ranged parallel GETs
    s.put_bytes(uri, data)
    (info,) = s.list(uri)
    s.download(uri, tmp_path / "big.bin", size=info.size, etag=info.etag)
    assert (tmp_path / "big.bin").read_bytes() == data
    small = f"s3://{s3_bucket}/small.bin"
    s.put_bytes(small, b"abc")
    with pytest.raises(RuntimeError, match="changed while it was being read"):
        s.download(small, tmp_path / "small.bin", size=3, etag="0123456789abcdef0123456789abcdef")
    assert not (tmp_path / "small.bin").exists()


def test_s3_missing_bucket_and_empty_prefix_are_clear(s3_server, s3_bucket):
    s = storage_for(f"s3://{s3_bucket}")
    with pytest.raises(
        ValueError, match=r"^bucket 'no-such-bucket-rm' does not exist \(s3://no-such-bucket-rm/p/\)$"
    ):
        s.list("s3://no-such-bucket-rm/p/")
    with pytest.raises(ValueError, match=rf"^no objects under s3://{s3_bucket}/p/: check the S3Uri$"):
        s.list(f"s3://{s3_bucket}/p/")
    assert s.list(f"s3://{s3_bucket}/p/", allow_empty=True) == []
    with pytest.raises(FileNotFoundError, match="no such S3 object"):
        s.stat(f"s3://{s3_bucket}/missing")
    with pytest.raises(FileNotFoundError):
        s.open(f"s3://{s3_bucket}/missing")


def test_s3_refused_credentials_raise_permission_error(s3_server, s3_bucket):
    """moto checks signatures and IAM policies once auth is switched on: these are real refusals."""
    uri = f"s3://{s3_bucket}/p/"
    storage_for(uri).put_bytes(uri + "a", b"a")
    iam = boto3.client("iam", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    iam.create_user(UserName=f"nobody-{s3_bucket}")
    key = iam.create_access_key(UserName=f"nobody-{s3_bucket}")["AccessKey"]
    with s3_server.auth_enabled():
        with pytest.raises(PermissionError, match=r"InvalidAccessKeyId.*check the AWS credentials") as e:
            S3Storage(S3Settings(access_key="AKIAUNKNOWNKEY000000", secret_key="x")).list(uri)
        assert uri in str(e.value)
        with pytest.raises(PermissionError, match=r"SignatureDoesNotMatch.*check the AWS credentials"):
            S3Storage(S3Settings(access_key=key["AccessKeyId"], secret_key="wrong")).list(uri)
        # Valid keys without any policy: AccessDenied.
        with pytest.raises(PermissionError, match=rf"access denied to {uri}.*check the AWS credentials"):
            S3Storage(S3Settings(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])).list(uri)


def test_settings_precedence_and_pickling(s3_server, monkeypatch):
    assert S3Settings().resolve().endpoint_url == s3_server.endpoint_url  # AWS_ENDPOINT_URL
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:1")
    assert S3Settings().resolve().endpoint_url == "http://s3-specific:1"
    monkeypatch.setenv("RAYMAKER_S3_ENDPOINT_URL", "http://raymaker:2")
    resolved = S3Settings().resolve()
    assert resolved.endpoint_url == "http://raymaker:2"
    assert S3Settings(endpoint_url="http://explicit:3").resolve().endpoint_url == "http://explicit:3"
    assert (resolved.region, resolved.access_key, resolved.secret_key) == ("us-east-1", "testing", "testing")
    assert "testing" not in repr(resolved).replace("access_key='testing'", "")  # secrets stay out of logs
    assert pickle.loads(pickle.dumps(resolved)) == resolved
    explicit = S3Settings(region="eu-west-1", access_key="a", secret_key="b").resolve()
    assert (explicit.region, explicit.access_key, explicit.secret_key) == ("eu-west-1", "a", "b")
    with pytest.raises(ValueError, match="both access_key and secret_key"):
        S3Settings(access_key="a").resolve()


def test_s3fs_and_arrow_filesystems_use_the_endpoint(s3_bucket):
    uri = f"s3://{s3_bucket}/data/x.bin"
    storage_for(uri).put_bytes(uri, b"0123456789")
    settings = pickle.loads(pickle.dumps(S3Settings().resolve()))  # as a Ray task would get it
    assert settings.s3fs().cat(f"{s3_bucket}/data/x.bin") == b"0123456789"
    arrow = settings.arrow_filesystem()
    assert arrow.get_file_info(f"{s3_bucket}/data/x.bin").size == 10
    with arrow.open_input_file(f"{s3_bucket}/data/x.bin") as f:
        assert f.read_at(4, 3) == b"3456"


# ---------------------------------------------------------------------------------------- local


def test_local_list_open_download_upload(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "b.csv").write_bytes(b"bb")
    (root / "sub" / "a.csv").write_bytes(b"a")
    s = storage_for(str(root))
    objs = s.list(str(root))
    assert [(o.relative, o.size) for o in objs] == [("b.csv", 2), ("sub/a.csv", 1)]
    assert objs[1].key == str(root / "sub" / "a.csv") and objs[1].uri.startswith("file://")
    assert [o.relative for o in s.list(f"file://{root}/b.csv")] == ["b.csv"]
    with s.open(objs[0].uri) as f:
        assert f.read() == b"bb"
    assert s.read_bytes(str(root / "sub" / "a.csv")) == b"a"
    s.download(objs[0].uri, tmp_path / "copy" / "b.csv")
    assert (tmp_path / "copy" / "b.csv").read_bytes() == b"bb"
    s.upload(tmp_path / "copy" / "b.csv", str(tmp_path / "out" / "b.csv"))
    s.put_bytes(f"file://{tmp_path}/out/c.txt", b"c")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.csv", "c.txt"]


def test_local_missing_and_empty(tmp_path):
    s = LocalStorage()
    with pytest.raises(ValueError, match="no such file or directory"):
        s.list(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files under"):
        s.list(str(tmp_path / "empty"))
    assert s.list(str(tmp_path / "empty"), allow_empty=True) == []
    with pytest.raises(FileNotFoundError):
        s.stat(str(tmp_path / "nope"))
