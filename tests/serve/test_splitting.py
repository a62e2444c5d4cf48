"""SplitType / BatchStrategy / MaxPayloadInMB / AssembleWith for batch transform (raymaker.serve.splitting)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from raymaker.io import recordio
from raymaker.io.batch import DataFormatError
from raymaker.serve.splitting import (
    assemble,
    join_payload,
    mini_batches,
    recordio_payload,
    split_records,
)

MAGIC = struct.pack("<I", 0xCED7230A)
MB = 1 << 20


def dense_recordio(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    recordio.write_numpy_to_dense_tensor(buf, x, y)
    return buf.getvalue()


def cxx_multipart(payload: bytes) -> bytes:
    """Frame a payload as dmlc's C++ writer does: cut at aligned magic words and drop them."""
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


# ---- SplitType ----


def test_none_keeps_the_whole_object():
    data = b"a,b\nc,d\n"
    assert split_records(data, "None") == [data]


def test_empty_object_has_no_records():
    for kind in ("None", "Line", "RecordIO"):
        assert split_records(b"", kind) == []


def test_line_removes_terminators_skips_empty_lines_keeps_last_line():
    data = b"1,2\r\n\n3,4\n\r\n5,6"
    assert split_records(data, "Line") == [b"1,2", b"3,4", b"5,6"]


def test_line_keeps_whitespace_only_lines_and_lone_cr():
    # Only \n ends a line; a line of spaces is a record (SageMaker only drops empty lines).
    assert split_records(b" \na\rb\n", "Line") == [b" ", b"a\rb"]


def test_enum_spellings_are_case_and_underscore_insensitive():
    assert split_records(b"a\nb", "line") == [b"a", b"b"]
    assert list(mini_batches([b"a", b"b"], "MULTI_RECORD", 0)) == [range(0, 2)]
    with pytest.raises(ValueError, match="SplitType must be one of"):
        split_records(b"a", "Lines")


def test_tfrecord_is_not_supported():
    with pytest.raises(ValueError, match="SplitType TFRecord is not supported"):
        split_records(b"\0" * 16, "TFRecord", source="s3://b/in/x.tfrecord")


def test_recordio_each_record_is_a_frame_that_decodes_to_one_row():
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    y = np.arange(5, dtype=np.float32)
    data = dense_recordio(x, y)
    records = split_records(data, "RecordIO")
    assert len(records) == 5
    assert b"".join(records) == data
    for i, rec in enumerate(records):
        assert rec[:4] == MAGIC and len(rec) % 4 == 0
        feats, labels = recordio.decode(rec)
        np.testing.assert_array_equal(feats, x[i : i + 1])
        np.testing.assert_array_equal(labels, y[i : i + 1])
        batch = recordio.read(rec)
        assert len(batch) == 1


def test_recordio_variable_length_records():
    # Sparse rows of different lengths: frames differ in size (the non-uniform framing path).
    import scipy.sparse as sp

    m = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 2, 3, 0], [4, 5, 6, 7]], dtype=np.float32))
    buf = io.BytesIO()
    recordio.write_spmatrix_to_sparse_tensor(buf, m)
    records = split_records(buf.getvalue(), "RecordIO")
    assert len(records) == 3 and len({len(r) for r in records}) == 3
    for i, rec in enumerate(records):
        feats, _ = recordio.decode(rec)
        np.testing.assert_array_equal(feats.toarray(), m[i].toarray())


def _multipart_row() -> tuple[np.ndarray, bytes]:
    """A dense row whose payload holds the magic word at an aligned offset (so the C++ writer splits
    it); the offset of the values depends on the width, so try a few widths."""
    magic_float = np.frombuffer(MAGIC, np.float32)[0]
    for width in range(1, 12):
        for lead in range(0, 4):
            row = np.array([[1.0] * lead + [magic_float] * width], dtype=np.float32)
            payload = recordio.read_records(dense_recordio(row))[0].SerializeToString()
            framed = cxx_multipart(payload)
            if (struct.unpack_from("<I", framed, 4)[0] >> 29) == 1:
                return row, framed
    raise AssertionError("no multi-part layout found")


def test_recordio_multipart_record_stays_together():
    row, multipart = _multipart_row()
    plain = dense_recordio(np.array([[7.0, 8.0]], dtype=np.float32))
    data = plain + multipart + plain
    records = split_records(data, "RecordIO")
    assert records == [plain, multipart, plain]
    feats, _ = recordio.decode(records[1])
    np.testing.assert_array_equal(feats, row)
    # recordio_payload rejoins the parts with the magic word the writer dropped.
    assert recordio_payload(multipart) == recordio.read_records(dense_recordio(row))[0].SerializeToString()


def test_recordio_payload_strips_header_and_padding():
    assert recordio_payload(MAGIC + struct.pack("<I", 5) + b"abcde\0\0\0") == b"abcde"


def test_recordio_final_record_without_padding_gets_it():
    frame = MAGIC + struct.pack("<I", 5) + b"abcde"
    data = MAGIC + struct.pack("<I", 3) + b"xyz\0" + frame
    records = split_records(data, "RecordIO")
    assert records == [MAGIC + struct.pack("<I", 3) + b"xyz\0", frame + b"\0\0\0"]


def test_recordio_truncated_names_source_and_offset():
    data = dense_recordio(np.ones((3, 2), np.float32))
    cut = data[:-6]
    with pytest.raises(DataFormatError, match=r"s3://b/in/a\.rec: byte \d+: truncated record"):
        split_records(cut, "RecordIO", source="s3://b/in/a.rec")


def test_recordio_garbage_names_offset():
    data = dense_recordio(np.ones((2, 2), np.float32))
    with pytest.raises(DataFormatError, match=r"in\.rec: byte 0: bad magic number"):
        split_records(b"not recordio at all!" + data, "RecordIO", source="in.rec")
    frame_len = len(data) // 2
    with pytest.raises(DataFormatError, match=rf"byte {frame_len}: bad magic"):
        split_records(data[:frame_len] + b"\xff" * 8 + data[frame_len + 8 :], "RecordIO", source="in.rec")


# ---- BatchStrategy / MaxPayloadInMB ----


def test_single_record_yields_each_record():
    assert list(mini_batches([b"a", b"bb", b"c"], "SingleRecord", 6 * MB)) == [
        range(i, i + 1) for i in range(3)
    ]


def test_multi_record_packs_up_to_the_limit_with_separators():
    records = [b"x" * 3] * 10  # 4 bytes each with the newline
    batches = list(mini_batches(records, "MultiRecord", 10, separator_bytes=1))
    assert batches == [range(0, 2), range(2, 4), range(4, 6), range(6, 8), range(8, 10)]
    for idx in batches:
        assert len(join_payload([records[i] for i in idx], "Line")) <= 10
    # Without the separator cost three records fit exactly.
    assert list(mini_batches(records, "MultiRecord", 9))[0] == range(0, 3)


def test_multi_record_exact_fit_and_varied_sizes():
    records = [b"a" * n for n in (5, 1, 4, 6, 2, 2, 2, 10)]
    batches = list(mini_batches(records, "MultiRecord", 10))
    assert batches == [range(0, 3), range(3, 6), range(6, 7), range(7, 8)]
    assert [i for r in batches for i in r] == list(range(len(records)))


def test_multi_record_large_count_is_contiguous_and_within_limit():
    rng = np.random.default_rng(0)
    records = [b"r" * int(n) for n in rng.integers(1, 200, 20_000)]
    limit = 4096
    batches = list(mini_batches(records, "MultiRecord", limit, separator_bytes=1))
    assert [i for r in batches for i in r] == list(range(len(records)))
    for k, r in enumerate(batches):
        size = sum(len(records[i]) + 1 for i in r)
        assert size <= limit
        if k + 1 < len(batches):  # greedy: the next record would not have fit
            assert size + len(records[r.stop]) + 1 > limit


def test_zero_limit_means_one_batch():
    records = [b"a" * 100] * 5
    assert list(mini_batches(records, "MultiRecord", 0)) == [range(0, 5)]
    assert len(list(mini_batches(records, "SingleRecord", 0))) == 5
    assert list(mini_batches([], "MultiRecord", 0)) == []


def test_oversize_record_error_names_source_record_and_sizes():
    records = [b"a"] * 6 + [b"b" * (7 * MB)] + [b"c"]
    msg = r"^s3://b/in/a\.csv: record 7 is 7340032 bytes, over MaxPayloadInMB=6 \(6291456 bytes\)$"
    with pytest.raises(ValueError, match=msg):
        list(mini_batches(records, "MultiRecord", 6 * MB, source="s3://b/in/a.csv"))
    with pytest.raises(ValueError, match="record 7 is 7340032 bytes"):
        list(mini_batches(records, "SingleRecord", 6 * MB, source="s3://b/in/a.csv"))


def test_oversize_by_the_separator_says_so():
    with pytest.raises(ValueError, match=r"record 1 is 10 bytes \(11 with its separator\)"):
        list(mini_batches([b"x" * 10], "MultiRecord", 10, separator_bytes=1))


def test_bad_strategy_and_negative_limit():
    with pytest.raises(ValueError, match="BatchStrategy must be one of"):
        list(mini_batches([b"a"], "Bulk", 10))
    with pytest.raises(ValueError, match=">= 0"):
        list(mini_batches([b"a"], "MultiRecord", -1))


# ---- request bodies ----


def test_join_payload():
    assert join_payload([b"1,2", b"3,4"], "Line") == b"1,2\n3,4\n"
    assert join_payload([b"ab", b"cd"], "RecordIO") == b"abcd"
    assert join_payload([b"whole"], "None") == b"whole"
    with pytest.raises(ValueError, match="one record"):
        join_payload([b"a", b"b"], "None")


def test_multi_record_recordio_batch_decodes_to_its_rows():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    records = split_records(dense_recordio(x), "RecordIO")
    limit = 3 * len(records[0])
    for idx in mini_batches(records, "MultiRecord", limit):
        feats, _ = recordio.decode(join_payload([records[i] for i in idx], "RecordIO"))
        np.testing.assert_array_equal(feats, x[idx.start : idx.stop])


# ---- AssembleWith ----


def test_assemble_none_concatenates():
    assert assemble([b"[1,2]", b"[3]"], "None") == b"[1,2][3]"


def test_assemble_line_adds_one_newline_per_response():
    assert assemble([b"0.1", b"0.2\n", b"0.3\n0.4", b""], "Line") == b"0.1\n0.2\n0.3\n0.4\n\n"
    assert assemble([], "Line") == b""


def test_csv_round_trip_line_split_multi_record():
    data = b"".join(f"{i},{i * 2}\n".encode() for i in range(100))
    records = split_records(data, "Line")
    responses = []
    for idx in mini_batches(records, "MultiRecord", 64, separator_bytes=1):
        body = join_payload([records[i] for i in idx], "Line")
        responses.append(body)  # an echo model
    assert assemble(responses, "Line") == data
