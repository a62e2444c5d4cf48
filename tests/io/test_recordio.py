"""RecordIO-protobuf: interop with the SageMaker training toolkit (an implementation no one here wrote),
multi-part records, sparse data with empty rows, streaming, and every malformed-input path."""

import io
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from sagemaker_training import recordio as toolkit
from sagemaker_training.record_pb2 import Record as ToolkitRecord

from raymaker.io import DataFormatError, recordio
from raymaker.io.formats import get_format

MAGIC = struct.pack("<I", 0xCED7230A)
# A float32 whose bytes are the RecordIO magic: C++ writers must split records around it.
MAGIC_FLOAT = np.frombuffer(MAGIC, np.float32)[0]


def toolkit_dense(x, y=None) -> bytes:
    buf = io.BytesIO()
    toolkit._write_numpy_to_dense_tensor(buf, x, y)
    return buf.getvalue()


def toolkit_sparse(x, y=None) -> bytes:
    buf = io.BytesIO()
    toolkit._write_spmatrix_to_sparse_tensor(buf, x, y)
    return buf.getvalue()


def toolkit_read(data: bytes) -> list:
    out = []
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        r = ToolkitRecord()
        r.ParseFromString(payload)
        out.append(r)
    return out


def ours_dense(x, y=None) -> bytes:
    buf = io.BytesIO()
    recordio.write_numpy_to_dense_tensor(buf, x, y)
    return buf.getvalue()


def ours_sparse(x, y=None) -> bytes:
    buf = io.BytesIO()
    recordio.write_spmatrix_to_sparse_tensor(buf, x, y)
    return buf.getvalue()


def cxx_multipart(payload: bytes) -> bytes:
    """Frame one payload the way dmlc's C++ RecordIOWriter does: split at aligned magic words, drop them."""
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == MAGIC]
    if not cuts:
        return struct.pack("<II", 0xCED7230A, len(payload)) + payload + b"\0" * (-len(payload) % 4)
    out, begin = b"", 0
    for k, cut in enumerate(cuts):
        part = payload[begin:cut]
        out += struct.pack("<II", 0xCED7230A, ((1 if k == 0 else 2) << 29) | len(part)) + part
        begin = cut + 4
    last = payload[begin:]
    return out + struct.pack("<II", 0xCED7230A, (3 << 29) | len(last)) + last + b"\0" * (-len(last) % 4)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize(
    "xdtype, ydtype",
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float32, np.int64),
        (np.int64, None),
        (np.float32, None),
    ],
)
def test_dense_writer_matches_toolkit_byte_for_byte(rng, xdtype, ydtype):
    x = (rng.normal(size=(57, 9)) * 100).astype(xdtype)
    y = None if ydtype is None else rng.integers(-3, 3, 57).astype(ydtype)
    assert ours_dense(x, y) == toolkit_dense(x, y)


def test_sparse_writer_matches_toolkit_byte_for_byte(rng):
    x = sp.random(40, 25, density=0.2, format="csr", dtype=np.float32, random_state=3)
    y = rng.integers(0, 2, 40).astype(np.float32)
    assert ours_sparse(x, y) == toolkit_sparse(x, y)
    assert ours_sparse(x.astype(np.float64)) == toolkit_sparse(x.astype(np.float64))


def test_writer_rejects_what_the_sdk_rejects(rng):
    with pytest.raises(ValueError, match="Matrix"):
        ours_dense(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="Unsupported dtype"):
        ours_dense(np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="not compatible"):
        ours_dense(np.zeros((2, 3), np.float32), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="sparse"):
        ours_sparse(np.zeros((2, 2), np.float32))


def test_decode_toolkit_dense_with_labels(rng):
    x = rng.normal(size=(1000, 50)).astype(np.float32)
    y = rng.integers(0, 2, 1000).astype(np.float32)
    features, labels = recordio.decode(toolkit_dense(x, y))
    assert features.dtype == np.float32 and features.shape == (1000, 50)
    np.testing.assert_array_equal(features, x)
    np.testing.assert_array_equal(labels, y)


@pytest.mark.parametrize(
    "xdtype, ydtype", [(np.float64, np.float64), (np.int64, np.int64), (np.float32, np.int64)]
)
def test_decode_other_tensor_types(rng, xdtype, ydtype):
    x = (rng.normal(size=(30, 4)) * 1000).astype(xdtype)
    y = rng.integers(-5, 5, 30).astype(ydtype)
    features, labels = recordio.decode(toolkit_dense(x, y))
    # int64 is written as an Int32 tensor, as the SDK does
    np.testing.assert_array_equal(features, x)
    assert features.dtype == {np.float64: np.float64, np.int64: np.int32, np.float32: np.float32}[xdtype]
    np.testing.assert_array_equal(labels, y)
    assert labels.dtype == (np.int32 if ydtype is np.int64 else np.float64)


def test_decode_without_labels(rng):
    x = rng.normal(size=(10, 3)).astype(np.float32)
    features, labels = recordio.decode(toolkit_dense(x))
    np.testing.assert_array_equal(features, x)
    assert labels is None


def test_decode_sparse_with_empty_rows(rng):
    x = sp.random(300, 40, density=0.05, format="lil", dtype=np.float32, random_state=5)
    x[0, :] = 0
    x[17, :] = 0
    x[299, :] = 0
    x = x.tocsr()
    x.eliminate_zeros()
    y = rng.normal(size=300).astype(np.float32)
    features, labels = recordio.decode(toolkit_sparse(x, y))
    assert sp.issparse(features) and features.format == "csr"
    assert features.shape == (300, 40)
    assert features[0].nnz == 0 and features[17].nnz == 0 and features[299].nnz == 0
    assert (features != x).nnz == 0
    np.testing.assert_array_equal(labels, y)


def test_decode_sparse_equal_nnz_rows(rng):
    # Every row has the same number of entries: records have equal lengths but different keys.
    rows = np.repeat(np.arange(50), 3)
    cols = np.concatenate([rng.choice(20, 3, replace=False) for _ in range(50)])
    x = sp.csr_matrix((rng.normal(size=150).astype(np.float32), (rows, cols)), shape=(50, 20))
    features, labels = recordio.decode(toolkit_sparse(x))
    assert (features != x).nnz == 0 and labels is None


def test_toolkit_reads_our_records(rng):
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20).astype(np.float32)
    records = toolkit_read(ours_dense(x, y))
    assert len(records) == 20
    np.testing.assert_array_equal([list(r.features["values"].float32_tensor.values) for r in records], x)
    np.testing.assert_array_equal([r.label["values"].float32_tensor.values[0] for r in records], y)
    s = sp.random(8, 10, density=0.3, format="csr", dtype=np.float32, random_state=2)
    records = toolkit_read(ours_sparse(s))
    assert list(records[3].features["values"].float32_tensor.keys) == list(s[3].indices)
    assert list(records[3].features["values"].float32_tensor.shape) == [10]


def test_read_records_returns_protobuf_messages(rng):
    x = rng.normal(size=(5, 3)).astype(np.float32)
    records = recordio.read_records(io.BytesIO(toolkit_dense(x, np.arange(5, dtype=np.float32))))
    assert len(records) == 5
    assert type(records[0]).DESCRIPTOR.full_name == "aialgs.data.Record"
    assert list(records[2].features["values"].float32_tensor.values) == pytest.approx(list(x[2]))
    assert records[4].label["values"].float32_tensor.values[0] == 4.0


def test_multipart_records_are_reassembled(rng):
    x = rng.normal(size=(6, 8)).astype(np.float32)
    x[1, 2] = MAGIC_FLOAT
    x[1, 6] = MAGIC_FLOAT
    x[4, 0] = MAGIC_FLOAT
    y = np.arange(6, dtype=np.float32)
    python_written = toolkit_dense(x, y)
    payloads = [r.SerializeToString() for r in toolkit_read(python_written)]
    data = b"".join(cxx_multipart(p) for p in payloads)
    assert data != python_written  # really split
    features, labels = recordio.decode(data)
    np.testing.assert_array_equal(features.view(np.uint32), x.view(np.uint32))
    np.testing.assert_array_equal(labels, y)
    assert [r.SerializeToString() for r in recordio.read_records(data)] == payloads
    # and unsplit: Python writers leave the magic inside payloads, which must not confuse framing
    features, _ = recordio.decode(python_written)
    np.testing.assert_array_equal(features.view(np.uint32), x.view(np.uint32))


def test_magic_inside_variable_length_records():
    x = sp.csr_matrix(np.array([[MAGIC_FLOAT, 0, 1], [0, 0, 0], [2, MAGIC_FLOAT, MAGIC_FLOAT]], np.float32))
    features, _ = recordio.decode(toolkit_sparse(x))
    np.testing.assert_array_equal(features.toarray().view(np.uint32), x.toarray().view(np.uint32))


def test_unpacked_repeated_fields_are_read():
    # proto2 parsers must accept unpacked encodings of packed fields: Float32Tensor.values as fixed32s.
    values = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.0, 2.0, 3.0))
    value = b"\x12" + bytes([len(values)]) + values  # Value.float32_tensor
    entry = b"\x0a\x06values" + b"\x12" + bytes([len(value)]) + value
    payload = b"\x0a" + bytes([len(entry)]) + entry
    data = struct.pack("<II", 0xCED7230A, len(payload)) + payload + b"\0" * (-len(payload) % 4)
    features, labels = recordio.decode(data * 2)
    np.testing.assert_array_equal(features, [[1, 2, 3], [1, 2, 3]])
    assert labels is None


def test_iter_batches_streams_the_same_rows(rng, tmp_path):
    x = rng.normal(size=(2000, 7)).astype(np.float32)
    y = rng.integers(0, 2, 2000).astype(np.float32)
    path = tmp_path / "train.rec"
    path.write_bytes(toolkit_dense(x, y))
    batches = list(recordio.iter_batches(str(path), chunk_bytes=10_000))
    assert len(batches) > 5
    np.testing.assert_array_equal(np.concatenate([b.features for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), y)
    s = sp.random(500, 30, density=0.1, format="csr", dtype=np.float32, random_state=9)
    batches = list(recordio.iter_batches(io.BytesIO(toolkit_sparse(s)), chunk_bytes=1000))
    assert len(batches) > 5
    assert (sp.vstack([b.features for b in batches]) != s).nnz == 0


def test_registry_and_sources(rng, tmp_path):
    x = rng.normal(size=(4, 2)).astype(np.float32)
    data = toolkit_dense(x)
    fmt, params = get_format("application/x-recordio-protobuf")
    (tmp_path / "a.rec").write_bytes(data)
    for source in (data, str(tmp_path / "a.rec"), io.BytesIO(data)):
        np.testing.assert_array_equal(fmt.read(source, **params).features, x)


def test_empty_input_gives_no_rows():
    features, labels = recordio.decode(b"")
    assert features.shape[0] == 0 and labels is None


# --- malformed input -------------------------------------------------------------------------------


def test_wrong_magic(rng):
    with pytest.raises(DataFormatError, match=r"byte 0: bad magic number 0x64636261"):
        recordio.decode(b"abcdefghijkl")
    data = bytearray(toolkit_dense(rng.normal(size=(3, 2)).astype(np.float32)))
    stride = len(data) // 3
    data[2 * stride] ^= 0xFF
    with pytest.raises(DataFormatError, match=rf"byte {2 * stride}: bad magic"):
        recordio.decode(bytes(data))


def test_truncated_data(rng, tmp_path):
    data = toolkit_dense(rng.normal(size=(3, 5)).astype(np.float32))
    stride = len(data) // 3
    with pytest.raises(DataFormatError, match=rf"byte {2 * stride}: truncated record"):
        recordio.decode(data[:-5])
    with pytest.raises(DataFormatError, match=rf"byte {3 * stride}: truncated record header"):
        recordio.decode(data + MAGIC)
    path = tmp_path / "cut.rec"
    path.write_bytes(data[:-5])
    with pytest.raises(DataFormatError, match=rf"cut.rec.*byte {2 * stride}: truncated"):
        recordio.read(str(path))
    with pytest.raises(DataFormatError, match="truncated"):
        list(recordio.iter_batches(io.BytesIO(data[:-5]), chunk_bytes=16))


def test_corrupt_payload(rng):
    data = bytearray(toolkit_dense(rng.normal(size=(3, 5)).astype(np.float32)))
    stride = len(data) // 3
    data[stride + 8 + 1] = 0x7F  # features entry length now runs past the record
    with pytest.raises(DataFormatError, match=rf"record 1 \(byte {stride}\): corrupt payload"):
        recordio.decode(bytes(data))


def test_multipart_without_last_part():
    payload = b"\x0a\x00" * 4
    first = struct.pack("<II", 0xCED7230A, (1 << 29) | len(payload)) + payload
    with pytest.raises(DataFormatError, match="no last part"):
        recordio.decode(first)
    middle = struct.pack("<II", 0xCED7230A, (2 << 29) | len(payload)) + payload
    with pytest.raises(DataFormatError, match=r"byte 0: record part with cflag 2 has no first part"):
        recordio.decode(middle)


def test_dense_rows_of_different_lengths():
    data = toolkit_dense(np.ones((2, 3), np.float32)) + toolkit_dense(np.ones((1, 4), np.float32))
    with pytest.raises(DataFormatError, match="record 0 has 3 values, record 2 has 4"):
        recordio.decode(data)


def test_mixed_labels():
    data = toolkit_dense(np.ones((2, 3), np.float32), np.ones(2, np.float32)) + toolkit_dense(
        np.ones((1, 3), np.float32)
    )
    with pytest.raises(DataFormatError, match="some records have a label and others do not"):
        recordio.decode(data)


def test_uniform_fast_path_checks_every_record(rng):
    # Same length, different structure far into the data: the label key of record 15000 is renamed.
    x = rng.normal(size=(20000, 4)).astype(np.float32)
    data = bytearray(toolkit_dense(x, np.ones(20000, np.float32)))
    stride = len(data) // 20000
    at = data.index(b"values", 15000 * stride + 8 + 30)
    data[at + 5] = ord("x")
    with pytest.raises(DataFormatError, match="some records have a label and others do not"):
        recordio.decode(bytes(data))
