"""Text, Parquet and image formats: round trips against data written by other tools (stdlib csv/json,
pyarrow, Pillow), every source kind, streaming, and malformed input naming its source and line/record."""

from __future__ import annotations

import csv as stdlib_csv
import io
import json as stdlib_json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from PIL import Image

from raymaker.io.batch import Batch, DataFormatError
from raymaker.io.formats import csv, get_format, image, json, libsvm, parquet

RNG = np.random.default_rng(7)


def as_kind(kind: str, data: bytes, tmp_path, filename: str):
    """The same input as bytes, a path, or an open binary stream."""
    path = tmp_path / filename
    path.write_bytes(data)
    return {"bytes": data, "path": path, "stream": io.BytesIO(data)}[kind]


def float32_table(rows: int, cols: int) -> np.ndarray:
    return (RNG.standard_normal((rows, cols)) * 100).astype(np.float32)


def csv_bytes(rows: np.ndarray) -> bytes:
    out = io.StringIO()
    # repr of a float32 is its shortest exact form: the round trip must be bit-exact.
    stdlib_csv.writer(out, lineterminator="\n").writerows([[repr(float(v)) for v in row] for row in rows])
    return out.getvalue().encode()


def assert_same(a: Batch, b: Batch) -> None:
    if a.is_sparse or b.is_sparse:
        assert a.is_sparse and b.is_sparse
        assert a.features.shape == b.features.shape
        assert (a.features != b.features).nnz == 0
    else:
        np.testing.assert_array_equal(a.features, b.features)
    if a.labels is None:
        assert b.labels is None
    else:
        np.testing.assert_array_equal(a.labels, b.labels)


# --- CSV ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_csv_round_trip_labelled(tmp_path, kind):
    table = float32_table(50, 6)
    batch = csv.read(as_kind(kind, csv_bytes(table), tmp_path, "train.csv"))
    assert batch.features.dtype == np.float32 and batch.labels.dtype == np.float32
    np.testing.assert_array_equal(batch.labels, table[:, 0])
    np.testing.assert_array_equal(batch.features, table[:, 1:])


@pytest.mark.parametrize("label_size", ["0", 0])
def test_csv_unlabelled(label_size):
    table = float32_table(5, 3)
    batch = csv.read(csv_bytes(table), label_size=label_size)
    assert batch.labels is None
    np.testing.assert_array_equal(batch.features, table)


def test_csv_header_crlf_blank_lines_and_missing_values():
    data = b"y,a,b\r\n1,2,3\r\n\r\n0,,nan\r\n"
    batch = csv.read(data, header="present")
    np.testing.assert_array_equal(batch.labels, [1, 0])
    np.testing.assert_array_equal(batch.features, [[2, 3], [np.nan, np.nan]])


@pytest.mark.parametrize("data", [b"", b"\n\n"])
def test_csv_empty_input_is_zero_rows(data):
    batch = csv.read(data)
    assert len(batch) == 0 and batch.features.dtype == np.float32 and len(batch.labels) == 0
    assert list(csv.iter_batches(io.BytesIO(data))) == []


def test_csv_iter_batches_streams_in_row_batches():
    table = float32_table(1000, 4)
    data = csv_bytes(table)
    batches = list(csv.iter_batches(io.BytesIO(data), batch_rows=64, block_size=2000))
    assert [len(b) for b in batches] == [64] * 15 + [40]
    assert_same(Batch.concat(batches), csv.read(data))
    # Without batch_rows: one Batch per pyarrow block, still everything.
    assert_same(Batch.concat(list(csv.iter_batches(data, block_size=2000))), csv.read(data))


def test_csv_lines_longer_than_a_block():
    # ~1.1 MB per line (above pyarrow's default block), kept to few columns so the test stays fast.
    table = RNG.integers(0, 1000, (3, 25_000)).astype(np.float32)
    data = "".join(",".join(f"{int(v)}.{'0' * 40}" for v in row) + "\n" for row in table).encode()
    assert len(data) > 3 << 20
    expected = Batch(table[:, 1:], table[:, 0])
    assert_same(csv.read(data), expected)
    assert_same(Batch.concat(list(csv.iter_batches(data))), expected)
    with pytest.raises(DataFormatError, match="pass a larger block_size"):
        list(csv.iter_batches(b"1,2\n" + data, block_size=1 << 16))


CSV_ERRORS = [
    # (input, line, words in the message)
    (b"1,2,3\n4,5,6\n7,8\n", 3, "expected 3 columns"),
    (b"1,2,3\n\n\n4,5,6,7\n", 4, "got 4"),
    (b"1,2,3\n4,x,6\n", 2, "'x' is not a number"),
    (b"a,b,c\n1,2,3\n", 1, "header=present"),
    (b"1,2,3\n\n,5,6\n", 3, "missing label"),
    (b'1,2,3\n"4,5\n', 2, None),
]


@pytest.mark.parametrize(("data", "line", "words"), CSV_ERRORS)
def test_csv_errors_name_source_and_line(tmp_path, data, line, words):
    path = tmp_path / "train.csv"
    path.write_bytes(data)
    for read in (lambda: csv.read(str(path)), lambda: list(csv.iter_batches(str(path), block_size=8))):
        with pytest.raises(DataFormatError) as err:
            read()
        assert str(err.value).startswith(f"{path}: line {line}: ")
        assert words is None or words in str(err.value)


def test_csv_error_line_in_a_later_block():
    data = csv_bytes(float32_table(500, 3)) + b"\n1,2,oops\n"
    for read in (lambda: csv.read(data), lambda: list(csv.iter_batches(io.BytesIO(data), block_size=1000))):
        with pytest.raises(DataFormatError, match=r": line 502: column 3: 'oops' is not a number"):
            read()


def test_csv_header_line_counts_in_line_numbers():
    with pytest.raises(DataFormatError, match="line 4: expected 2 columns"):
        csv.read(b"h1,h2\n1,2\n\n3\n", header="present")


@pytest.mark.parametrize(
    "params", [{"label_size": "2"}, {"label_size": "x"}, {"header": "maybe"}, {"sep": ";"}]
)
def test_csv_rejects_bad_parameters(params):
    with pytest.raises(ValueError):
        csv.read(b"1,2\n", **params)


def test_registry_csv_with_parameters():
    fmt, params = get_format("text/csv; label_size=0; charset=utf-8")
    assert fmt is csv and params == {"label_size": "0", "charset": "utf-8"}
    batch = fmt.read(b"1,2\n3,4\n", **params)
    assert batch.labels is None and batch.features.shape == (2, 2)


# --- libsvm ---------------------------------------------------------------------------------------


def random_csr(rows: int, cols: int) -> sp.csr_matrix:
    m = sp.random(rows, cols, density=0.2, format="csr", dtype=np.float32, random_state=3)
    m.data = (m.data * 100 - 50).astype(np.float32)
    return m


def libsvm_bytes(m: sp.csr_matrix, labels: np.ndarray) -> bytes:
    lines = []
    for i in range(m.shape[0]):
        row = m.getrow(i)
        feats = " ".join(f"{j}:{float(v)!r}" for j, v in zip(row.indices, row.data, strict=True))
        lines.append(f"{float(labels[i])!r} {feats}".rstrip())
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_libsvm_round_trip(tmp_path, kind):
    m = random_csr(40, 30)
    labels = RNG.integers(0, 3, 40).astype(np.float32)
    batch = libsvm.read(as_kind(kind, libsvm_bytes(m, labels), tmp_path, "train.libsvm"), num_features="30")
    assert batch.is_sparse and batch.features.dtype == np.float32
    assert_same(batch, Batch(m, labels))


def test_libsvm_width_blank_lines_signs_and_tabs():
    batch = libsvm.read(b"+1 0:1.5\t3:2\n\n-1 1:-1e3  2:4 \r\n0\n")
    np.testing.assert_array_equal(batch.labels, [1, -1, 0])
    np.testing.assert_array_equal(batch.features.toarray(), [[1.5, 0, 0, 2], [0, -1000, 4, 0], [0, 0, 0, 0]])
    assert libsvm.read(b"1 1:1\n", num_features=5).features.shape == (1, 5)
    empty = libsvm.read(b"")
    assert len(empty) == 0 and empty.is_sparse


def test_libsvm_iter_batches_matches_read():
    m = random_csr(300, 12)
    labels = np.arange(300, dtype=np.float32)
    data = libsvm_bytes(m, labels)
    batches = list(libsvm.iter_batches(io.BytesIO(data), block_size=256, batch_rows=50, num_features=12))
    assert [len(b) for b in batches] == [50] * 6
    assert_same(Batch.concat(batches), Batch(m, labels))


LIBSVM_ERRORS = [
    (b"1 0:1\n2 3:x\n", 2, "value 'x' is not a number"),
    (b"1 0:1\n\n1:2 3:4\n", 3, "expected a label first"),
    (b"1 0:1\n1 3\n", 2, "bad token '3'"),
    (b"1 0:1\n1 3:1:2\n", 2, "bad token '3:1:2'"),
    (b"1 0:1\nx 3:1\n", 2, "label 'x' is not a number"),
    (b"1 0:1\n1 1.5:1\n", 2, "index '1.5' is not an integer"),
    (b"1 0:1\n1 -1:1\n", 2, "negative index"),
    (b"1 0:1\n1 9:1\n", 2, "num_features=5"),
]


@pytest.mark.parametrize(("data", "line", "words"), LIBSVM_ERRORS)
def test_libsvm_errors_name_source_and_line(tmp_path, data, line, words):
    path = tmp_path / "train.libsvm"
    path.write_bytes(data)
    for read in (
        lambda: libsvm.read(path, num_features=5),
        lambda: list(libsvm.iter_batches(str(path), block_size=4, num_features=5)),
    ):
        with pytest.raises(DataFormatError) as err:
            read()
        assert str(err.value).startswith(f"{path}: line {line}: ") and words in str(err.value)


def test_libsvm_error_line_in_a_later_block():
    data = libsvm_bytes(random_csr(200, 5), np.zeros(200)) + b"1 2:3 q\n"
    with pytest.raises(DataFormatError, match="line 201: bad token 'q'"):
        list(libsvm.iter_batches(io.BytesIO(data), block_size=512))


def test_registry_libsvm():
    for content_type in ("text/libsvm", "text/x-libsvm;num_features=4"):
        fmt, params = get_format(content_type)
        assert fmt is libsvm
        assert fmt.read(b"1 0:2\n", **params).features.toarray()[0, 0] == 2


# --- JSON / JSON lines ----------------------------------------------------------------------------


def test_json_document_dense_forms():
    doc = {"instances": [{"features": [1.5, 16.0]}, {"data": {"features": {"values": [2, 3]}}}, [4, 5]]}
    batch = json.read(stdlib_json.dumps(doc).encode())
    assert not batch.is_sparse and batch.labels is None
    np.testing.assert_array_equal(batch.features, [[1.5, 16], [2, 3], [4, 5]])
    np.testing.assert_array_equal(json.read(b"[[1, 2], [3, 4]]").features, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(json.read(b'{"features": [7, 8]}').features, [[7, 8]])


def test_json_document_sparse_when_any_instance_is_sparse():
    doc = {
        "instances": [
            {"features": [1, 2]},
            {"data": {"features": {"keys": [26, 182], "shape": [2000], "values": [1, 1]}}},
        ]
    }
    batch = json.read(stdlib_json.dumps(doc).encode())
    assert batch.is_sparse and batch.features.shape == (2, 2000) and batch.features.dtype == np.float32
    expected = np.zeros((2, 2000), np.float32)
    expected[0, :2] = [1, 2]
    expected[1, [26, 182]] = 1
    np.testing.assert_array_equal(batch.features.toarray(), expected)


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_jsonlines_round_trip_fast_path(tmp_path, kind):
    table = float32_table(30, 5)
    labels = np.arange(30, dtype=np.float32)
    data = "".join(
        stdlib_json.dumps({"features": [float(v) for v in row], "label": float(y)}) + "\n"
        for row, y in zip(table, labels, strict=True)
    ).encode()
    batch = json.read(as_kind(kind, data, tmp_path, "request.jsonl"))
    assert_same(batch, Batch(table, labels))


def test_jsonlines_mixed_shapes_fall_back_per_line():
    data = (
        b'{"features": [1, 2], "label": 1}\n'
        b"\n"
        b'{"data": {"features": {"keys": [3], "shape": [4], "values": [5]}, "label": {"values": [0]}}}\n'
    )
    batch = json.read(data)
    assert batch.is_sparse
    np.testing.assert_array_equal(batch.features.toarray(), [[1, 2, 0, 0], [0, 0, 0, 5]])
    np.testing.assert_array_equal(batch.labels, [1, 0])
    np.testing.assert_array_equal(json.read(b"[1, 2]\n[3, 4]\n").features, [[1, 2], [3, 4]])


def test_json_empty_is_zero_rows():
    assert len(json.read(b"")) == 0
    assert len(json.read(b'{"instances": []}')) == 0


def test_jsonlines_iter_batches_and_documents():
    data = b"".join(b'{"features": [%d, 1.5], "label": %d}\n' % (i, i % 2) for i in range(500))
    batches = list(json.iter_batches(io.BytesIO(data), block_size=300, batch_rows=128))
    assert [len(b) for b in batches] == [128, 128, 128, 116]
    assert_same(Batch.concat(batches), json.read(data))
    pretty = stdlib_json.dumps({"instances": [{"features": [1, 2]}, {"features": [3, 4]}]}, indent=2).encode()
    (batch,) = json.iter_batches(io.BytesIO(pretty), block_size=8)
    np.testing.assert_array_equal(batch.features, [[1, 2], [3, 4]])


JSON_ERRORS = [
    (b'{"features": [1, 2]}\n{"features": [1, 2, 3]}\n', "line 2: expected 2 features"),
    (b'{"features": [1, 2]}\n\n{"feature": [1, 2]}\n', "line 3: missing 'features'"),
    (b'{"features": [1, 2]}\n{"features": [1, "a"]}\n', "line 2: feature 1 is 'a'"),
    (b'{"features": [1, 2]}\n{"features": [1, 2]\n', "line 2: invalid JSON"),
    (b'{"instances": [{"features": [1]}, {"data": {}}]}', "instances[1]: missing 'features'"),
    (b'{"instances": [{"features": [1, 2]}, {"features": [3]}]}', "instances[1]: expected 2 features"),
    (b'{"instances": [{"features": [1], "label": 1}, {"features": [3]}]}', "instances[1]: has no 'label'"),
    (
        b'{"instances": [{"data": {"features": {"keys": [7], "shape": [5], "values": [9]}}}]}',
        "instances[0]: key 7 is outside the shape [5]",
    ),
    (b'{"instances": [{"features": [1]},\n {"features": [2]]}', "line 2: invalid JSON"),
]


@pytest.mark.parametrize(("data", "where"), JSON_ERRORS)
def test_json_errors_name_source_and_record(tmp_path, data, where):
    path = tmp_path / "request.json"
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as err:
        json.read(path)
    assert str(err.value).startswith(f"{path}: {where}")


def test_registry_json_types():
    for content_type in ("application/json", "application/jsonlines"):
        fmt, params = get_format(content_type)
        assert fmt is json
        np.testing.assert_array_equal(fmt.read(b'{"features": [1]}\n', **params).features, [[1]])


# --- Parquet --------------------------------------------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=64)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_parquet_round_trip_first_column_label(tmp_path, kind):
    x = float32_table(100, 4)
    table = pa.table({"target": x[:, 0], "a": x[:, 1], "b": x[:, 2].astype(np.float64), "c": np.arange(100)})
    batch = parquet.read(as_kind(kind, parquet_bytes(table), tmp_path, "train.parquet"))
    assert batch.features.dtype == np.float32
    np.testing.assert_array_equal(batch.labels, x[:, 0])
    np.testing.assert_array_equal(batch.features, np.column_stack([x[:, 1], x[:, 2], np.arange(100)]))


def test_parquet_label_options_and_nulls():
    table = pa.table({"a": [1.0, 2.0], "y": [0, 1], "b": pa.array([None, 3.0])})
    data = parquet_bytes(table)
    by_name = parquet.read(data, label_column="y")
    np.testing.assert_array_equal(by_name.labels, [0, 1])
    np.testing.assert_array_equal(by_name.features, [[1, np.nan], [2, 3]])
    assert parquet.read(data, label_size="0").labels is None


def test_parquet_tensor_columns():
    x = float32_table(6, 4)
    labels = np.arange(6, dtype=np.float32)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(x.reshape(6, 2, 2))
    variable = pa.array([list(row) for row in x], type=pa.list_(pa.float32()))
    for column in (fixed, tensor, variable):
        batch = parquet.read(parquet_bytes(pa.table({"features": column, "label": labels})))
        assert_same(batch, Batch(x, labels))


def test_parquet_iter_batches(tmp_path):
    x = float32_table(300, 3)
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"y": x[:, 0], "a": x[:, 1], "b": x[:, 2]}), path)
    batches = list(parquet.iter_batches(path, batch_rows="100"))
    assert [len(b) for b in batches] == [100, 100, 100]
    assert_same(Batch.concat(batches), Batch(x[:, 1:], x[:, 0]))


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (pa.table({"y": [1.0, None], "a": [1, 2]}), "row 1: label column 'y' is null"),
        (pa.table({"y": [1, 2], "a": ["x", "y"]}), "column 'a' has type string"),
        (pa.table({"features": pa.array([[1, 2], [3]]), "label": [1, 2]}), "row 1: 'features' lists differ"),
    ],
)
def test_parquet_bad_content_names_source(tmp_path, table, words):
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataFormatError) as err:
        parquet.read(path)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)


def test_parquet_corrupt_file_names_source(tmp_path):
    good = parquet_bytes(pa.table({"y": [1.0], "a": [2.0]}))
    for i, data in enumerate([b"not parquet at all", good[:-12], good[:8] + b"\0" * 40 + good[48:]]):
        path = tmp_path / f"bad{i}.parquet"
        path.write_bytes(data)
        with pytest.raises(DataFormatError, match=f"^{path}: "):
            parquet.read(path)
    with pytest.raises(DataFormatError, match="^<bytes>: not a readable Parquet file"):
        parquet.read(b"PAR1 nonsense")


def test_parquet_missing_label_column_and_registry():
    fmt, params = get_format("application/x-parquet;label_column=nope")
    with pytest.raises(DataFormatError, match="no label column 'nope'"):
        fmt.read(parquet_bytes(pa.table({"y": [1.0]})), **params)


# --- images ---------------------------------------------------------------------------------------


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_image_png_round_trip(tmp_path, kind):
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    batch = image.read(as_kind(kind, encode(rgb), tmp_path, "cat.png"))
    assert batch.features.dtype == np.uint8 and batch.labels is None
    np.testing.assert_array_equal(batch.features, rgb[np.newaxis])


def test_image_channels_and_jpeg():
    gray = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    np.testing.assert_array_equal(image.read(encode(gray), channels="1").features, gray[None, :, :, None])
    as_rgb = image.read(encode(gray)).features
    assert as_rgb.shape == (1, 4, 6, 3) and (as_rgb == gray[None, :, :, None]).all()
    jpeg = image.read(encode(np.full((8, 8, 3), 200, np.uint8), "JPEG")).features
    assert jpeg.shape == (1, 8, 8, 3) and abs(int(jpeg.mean()) - 200) <= 2
    assert image.read(encode(gray), resize="2x3").features.shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="channels"):
        image.read(encode(gray), channels=4)


def test_image_corrupt_names_source(tmp_path):
    png = encode(np.zeros((16, 16, 3), np.uint8))
    for i, data in enumerate([b"not an image", png[: len(png) // 2]]):
        path = tmp_path / f"bad{i}.png"
        path.write_bytes(data)
        with pytest.raises(DataFormatError, match=f"^{path}: not a readable image"):
            image.read(path)


def write_channel(tmp_path, images: dict[str, np.ndarray], lst: str) -> None:
    for rel, arr in images.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(encode(arr))
    (tmp_path / "train.lst").write_text(lst)


def test_read_lst_and_image_channel(tmp_path):
    imgs = {f"class{i % 2}/img {i}.png": RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8) for i in range(4)}
    lst = "".join(f"{i}\t{i % 2}\t{rel}\n" for i, rel in enumerate(imgs)) + "\n"
    write_channel(tmp_path, imgs, lst)
    entries = image.read_lst(tmp_path / "train.lst")
    assert entries[1] == (1, (1.0,), "class1/img 1.png")
    batch = image.read_image_channel(tmp_path)
    np.testing.assert_array_equal(batch.features, np.stack(list(imgs.values())))
    np.testing.assert_array_equal(batch.labels, [0, 1, 0, 1])
    assert batch.labels.dtype == np.float32


def test_image_channel_multi_label_separate_lst_and_resize(tmp_path):
    imgs = {"a.png": np.zeros((4, 4, 3), np.uint8), "b.png": np.full((6, 2, 3), 9, np.uint8)}
    write_channel(tmp_path / "train", imgs, "")
    lst = tmp_path / "train_lst.lst"
    lst.write_text("0\t1\t0\ta.png\n1\t0\t1\tb.png\n")
    with pytest.raises(DataFormatError, match=rf"^{tmp_path / 'train' / 'b.png'}: image is 6x2 .* resize"):
        image.read_image_channel(tmp_path / "train", lst_path=lst)
    batch = image.read_image_channel(tmp_path / "train", lst_path=lst, resize=(3, 3))
    assert batch.features.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(batch.labels, [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    ("lst", "words"),
    [
        ("0\t1\ta.png\n1 0 b.png\n", "line 2: expected 'index<TAB>label"),
        ("0\t1\ta.png\nx\t0\tb.png\n", "line 2: index must be an integer"),
        ("0\t1\ta.png\n1\t0\t1\tb.png\n", "line 2: 2 labels, but the first entry has 1"),
    ],
)
def test_lst_errors_name_file_and_line(tmp_path, lst, words):
    (tmp_path / "train.lst").write_text(lst)
    with pytest.raises(DataFormatError, match=f"^{tmp_path / 'train.lst'}: {words}"):
        image.read_lst(tmp_path / "train.lst")


def test_image_channel_missing_or_corrupt_files(tmp_path):
    write_channel(tmp_path, {"a.png": np.zeros((2, 2, 3), np.uint8)}, "0\t1\ta.png\n1\t0\tgone.png\n")
    with pytest.raises(DataFormatError, match=r"train\.lst: cannot read .*gone\.png"):
        image.read_image_channel(tmp_path)
    (tmp_path / "gone.png").write_bytes(b"junk")
    with pytest.raises(DataFormatError, match=rf"^{tmp_path / 'gone.png'}: not a readable image"):
        image.read_image_channel(tmp_path)
    (tmp_path / "other.lst").write_text("")
    with pytest.raises(DataFormatError, match="several .lst files"):
        image.read_image_channel(tmp_path)


def test_registry_image_types():
    png = encode(np.zeros((2, 3, 3), np.uint8))
    for content_type in ("image/png", "image/jpeg", "application/x-image"):
        fmt, params = get_format(content_type)
        assert fmt is image and fmt.read(png, **params).features.shape == (1, 2, 3, 3)
    assert [len(b) for b in image.iter_batches(png)] == [1]


def test_every_format_module_declares_its_content_types():
    for module in (csv, libsvm, json, parquet, image):
        for content_type in module.CONTENT_TYPES:
            assert get_format(content_type)[0] is module


def test_json_lines_starting_with_null_fail_cleanly_in_their_own_process():
    """pyarrow's JSON reader crashes the whole process on a leading ``null``: a training worker must get
    a DataFormatError naming the line instead (run in a child, so a regression fails only this test)."""
    import subprocess
    import sys

    code = (
        "from raymaker.io.formats import get_format\n"
        "fmt, params = get_format('application/jsonlines')\n"
        "try:\n"
        "    fmt.read(b'null\\nnull\\n', **params)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "line 1" in done.stdout, done.stdout
