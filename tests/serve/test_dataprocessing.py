"""Batch transform DataProcessing (InputFilter, JoinSource, OutputFilter) and SageMaker's JSONPath subset.

Examples marked DG come from the SageMaker Developer Guide page "Associate Prediction Results with
Input Records" (batch-transform-data-processing) and the API reference for DataProcessing.
"""

from __future__ import annotations

import json

import pytest

from raymaker.serve.dataprocessing import DataProcessing, JsonPath

JSONL = "application/jsonlines"
JSON = "application/json"

# ---- JsonPath: parsing ----


@pytest.mark.parametrize(
    "expr",
    [
        "$",
        "$.id",
        "$.id.*",  # DG wildcard example
        "$['id','SageMakerOutput']",  # DG
        "$[1]",
        "$[1,3,5]",  # DG
        "$[2:5]",
        "$[:5]",
        "$[2:]",  # DG slices
        "$[1:]",
        "$.features",  # API InputFilter examples
        "$[0,5:]",  # API OutputFilter example
        "$.field1.['child1','child2']",  # DG: supported nesting form
        "$[*]",
        '$["a"]',
        "$.features[1:]",
        "$[0,-1]",
    ],
)
def test_supported_expressions_parse(expr):
    assert JsonPath.parse(expr).expr == expr


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("id", "must start with '\\$'"),
        ("$..id", "recursive descent"),
        ("$[?(@.price > 10)]", "filter and script"),
        ("$[(@.length-1)]", "filter and script"),
        ("$[1:5:2]", "slice steps"),
        ("$[a,b]", "not an index"),
        ("$['a',b]", "must all be quoted"),
        ("$[1", "unclosed"),
        ("$['a'", "unterminated|expected"),
        ("$.", "a name must follow"),
        ("$[]", "empty index"),
        ("$[1:x]", "not an integer"),
    ],
)
def test_unsupported_expressions_name_the_expression(expr, why):
    with pytest.raises(ValueError, match=why) as e:
        JsonPath.parse(expr)
    assert repr(expr) in str(e.value)


def test_max_length_is_63():
    ok = "$." + "a" * 61
    assert len(ok) == 63
    JsonPath.parse(ok)
    with pytest.raises(ValueError, match="64 characters; SageMaker allows at most 63"):
        JsonPath.parse(ok + "b")


def test_empty_expression_means_root():
    assert JsonPath.parse("").is_root and JsonPath.parse(None).is_root


# ---- JsonPath: evaluation ----

ROW = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]


def test_root_returns_value_unchanged():
    v = {"a": [1, 2]}
    assert JsonPath.parse("$").apply(v) is v


def test_slices_include_their_end_as_the_dg_says():
    # DG: "$[1:4] specifies the second through fifth columns"; "[5:] ... from the 6th column through
    # the last column"; "[:5] ... from the first column (index 0) through the sixth column".
    assert JsonPath.parse("$[1:4]").apply(ROW) == ["c1", "c2", "c3", "c4"]
    assert JsonPath.parse("$[5:]").apply(ROW) == ["c5", "c6"]
    assert JsonPath.parse("$[:5]").apply(ROW) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert JsonPath.parse("$[1:]").apply(ROW) == ROW[1:]
    assert JsonPath.parse("$[-3:-2]").apply(ROW) == ["c4", "c5"]
    assert JsonPath.parse("$[3:1]").apply(ROW) == []


def test_exclusive_slice_end_option():
    p = JsonPath.parse("$[1:4]", slice_end_inclusive=False)
    assert p.apply(ROW) == ["c1", "c2", "c3"]
    assert JsonPath.parse("$[0:-1]", slice_end_inclusive=False).apply(ROW) == ROW[:-1]
    assert JsonPath.parse("$[2:7]", slice_end_inclusive=False).apply(ROW) == ROW[2:]


def test_indexes_negative_and_lists():
    assert JsonPath.parse("$[0,-1]").apply(ROW) == ["c0", "c6"]
    assert JsonPath.parse("$[1,3,5]").apply(ROW) == ["c1", "c3", "c5"]
    assert JsonPath.parse("$[-1]").apply(ROW) == "c6"  # a single index selects the element itself
    assert JsonPath.parse("$[0,5:]").apply(ROW) == ["c0", "c5", "c6"]


def test_out_of_range_index_is_an_error_naming_the_path():
    # API OutputFilter: "If you specify indexes that aren't within the dimension size of the joined
    # dataset, you get an error."
    with pytest.raises(ValueError, match=r"JSONPath '\$\[0,9\]': index 9 is outside an array of 7 elements"):
        JsonPath.parse("$[0,9]").apply(ROW)
    with pytest.raises(ValueError, match="index -8"):
        JsonPath.parse("$[-8]").apply(ROW)
    with pytest.raises(ValueError, match="slice end 7"):
        JsonPath.parse("$[2:7]").apply(ROW)


def test_names_wildcards_and_chains():
    doc = {"id": "r1", "features": [0.5, 1.5, 2.5], "meta": {"a": 1, "b": 2}}
    assert JsonPath.parse("$.id").apply(doc) == "r1"
    assert JsonPath.parse("$['id']").apply(doc) == "r1"
    assert JsonPath.parse("$.features[1:]").apply(doc) == [1.5, 2.5]
    assert JsonPath.parse("$.meta.*").apply(doc) == [1, 2]
    assert JsonPath.parse("$.*").apply({"a": 1, "b": [2]}) == [1, [2]]
    assert JsonPath.parse("$['id','meta']").apply(doc) == {"id": "r1", "meta": {"a": 1, "b": 2}}
    assert JsonPath.parse("$.field1.['child1','child2']").apply(
        {"field1": {"child1": 1, "child2": 2, "x": 3}}
    ) == {
        "child1": 1,
        "child2": 2,
    }
    rows = [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]
    assert JsonPath.parse("$[*].a").apply(rows) == [1, 4]
    assert JsonPath.parse("$[*]['a','c']").apply(rows) == [{"a": 1, "c": 3}, {"a": 4, "c": 6}]
    assert JsonPath.parse("$['x','y'][0]").apply({"x": [1, 2], "y": [3]}) == [1, 3]


def test_missing_key_and_wrong_type_errors():
    with pytest.raises(ValueError, match=r"JSONPath '\$\.nope': key 'nope' not found"):
        JsonPath.parse("$.nope").apply({"id": 1})
    with pytest.raises(ValueError, match="cannot select key 'id' from an array"):
        JsonPath.parse("$.id").apply([1])
    with pytest.raises(ValueError, match="indexes need an array, got an object"):
        JsonPath.parse("$[0]").apply({"a": 1})
    with pytest.raises(ValueError, match=r"'\*' needs an object or array"):
        JsonPath.parse("$.a.*").apply({"a": 3})


# ---- DataProcessing: validation ----


def test_defaults_are_identity():
    dp = DataProcessing()
    assert dp.identity
    assert dp.filter_input(b"1,2,3") == b"1,2,3"
    assert dp.finish(b"1,2,3", b"0.5\n") == b"0.5"
    assert not DataProcessing(join_source="Input").identity
    assert not DataProcessing(input_filter="$[1:]").identity


def test_identity_with_any_content_type():
    # Defaults need no particular format (RecordIO, images...).
    assert DataProcessing(content_type="application/x-recordio-protobuf", accept="application/json").identity


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        (
            dict(input_filter="$[1:]", content_type="application/x-recordio-protobuf"),
            "InputFilter '\\$\\[1:\\]' needs",
        ),
        (
            dict(output_filter="$[0]", accept="application/x-recordio-protobuf"),
            "OutputFilter '\\$\\[0\\]' needs Accept",
        ),
        (
            dict(join_source="Input", content_type="image/jpeg", accept=JSON),
            "JoinSource Input needs ContentType",
        ),
        (dict(join_source="Input", content_type="text/csv", accept=JSON), "must both be CSV or both JSON"),
        (dict(join_source="Input", content_type=JSONL, accept="text/csv"), "must both be CSV or both JSON"),
        (dict(input_filter="$.id"), "CSV rows are arrays"),
        (
            dict(join_source="Input", output_filter="$['id','SageMakerOutput']"),
            "OutputFilter .* CSV rows are arrays",
        ),
        (dict(join_source="Both"), "JoinSource must be Input or None"),
    ],
)
def test_invalid_settings(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        DataProcessing(**kwargs)


def test_valid_combinations():
    DataProcessing("$.features", "Input", "$", JSON, JSONL)  # JSON family both sides
    DataProcessing("$[1:]", "Input", "$[0,-1]", "text/csv; charset=utf-8", "TEXT/CSV")
    # Without a join, the output filter only needs Accept to be filterable.
    DataProcessing("$[1:]", "None", "$.label", "text/csv", JSON)
    DataProcessing("$", "None", "$[0]", "application/x-recordio-protobuf", "text/csv")


# ---- DataProcessing: CSV (DG examples) ----


def test_dg_csv_join_appends_output_columns():
    # DG: "if the record is [1,2,3], and the label result is [1], then the output file would contain [1,2,3,1]"
    dp = DataProcessing(join_source="Input")
    assert dp.finish(b"1,2,3", b"1\n") == b"1,2,3,1"
    assert dp.finish(b"1,2,3", b"0.2,0.8") == b"1,2,3,0.2,0.8"


def test_dg_csv_exclude_id_column_then_join():
    # DG "Output an ID Column with Results and Exclude the ID Column from the Input (CSV)":
    # five columns, the first is the ID; InputFilter $[1:], JoinSource Input, OutputFilter $.
    dp = DataProcessing("$[1:]", "Input", "$")
    record = b"id-17,5.1,3.5,1.4,0.2"
    assert dp.filter_input(record) == b"5.1,3.5,1.4,0.2"
    assert dp.finish(record, b"0.93") == b"id-17,5.1,3.5,1.4,0.2,0.93"


def test_notebook_output_filter_id_and_prediction():
    # SageMaker examples notebook: input_filter="$[1:]", join_source="Input", output_filter="$[0,-1]".
    dp = DataProcessing("$[1:]", "Input", "$[0,-1]")
    record = b"842302,17.99,10.38,122.8"
    assert dp.filter_input(record) == b"17.99,10.38,122.8"
    assert dp.finish(record, b"0.9871\n") == b"842302,0.9871"


def test_csv_keeps_number_text_and_rfc4180_quoting():
    dp = DataProcessing("$[1:]", "Input", "$")
    record = b'"Smith, J.",1.50,"say ""hi""",007,1e3'
    assert dp.filter_input(record) == b'1.50,"say ""hi""",007,1e3'
    assert dp.finish(record, b"1.0") == b'"Smith, J.",1.50,"say ""hi""",007,1e3,1.0'
    # Quoted model output fields are parsed as CSV too.
    assert DataProcessing(join_source="Input").finish(b"a", b'"x,y",2') == b'a,"x,y",2'


def test_csv_single_index_input_filter_is_a_one_column_row():
    dp = DataProcessing("$[-1]")
    assert dp.filter_input(b"a,b,c") == b"c"


def test_csv_output_filter_without_join_filters_the_output():
    dp = DataProcessing(output_filter="$[0]")
    assert dp.finish(b"ignored", b"0.1,0.9\n") == b"0.1"


def test_csv_record_with_crlf_and_unicode():
    dp = DataProcessing("$[1:]", "Input", "$[0,-1]")
    assert dp.filter_input("é,1,2\r\n".encode()) == b"1,2"
    assert dp.finish("é,1,2".encode(), "ü\r\n".encode()) == "é,ü".encode()


def test_csv_output_filter_out_of_range_on_joined_row():
    dp = DataProcessing("$", "Input", "$[0,9]")
    with pytest.raises(ValueError, match="index 9 is outside an array of 4 elements"):
        dp.finish(b"1,2,3", b"0")


# ---- DataProcessing: JSON / JSON Lines (DG examples) ----


def test_dg_json_join_adds_sagemaker_output():
    # DG: input {"key":1}, result {"label":1} -> {"key":1, "SageMakerOutput":{"label":1}}
    dp = DataProcessing(join_source="Input", content_type=JSON, accept=JSON)
    out = dp.finish(b'{"key":1}', b'{"label":1}')
    assert json.loads(out) == {"key": 1, "SageMakerOutput": {"label": 1}}
    assert out == b'{"key":1,"SageMakerOutput":{"label":1}}'


def test_dg_json_exclude_id_attribute():
    # DG "Output an ID Attribute with Results and Exclude the ID Attribute from the Input (JSON)":
    # InputFilter $.features, JoinSource Input, OutputFilter $['id','SageMakerOutput'].
    dp = DataProcessing("$.features", "Input", "$['id','SageMakerOutput']", JSONL, JSONL)
    record = b'{"id":"a-1","features":[1.50,2e3,3],"extra":true}'
    assert dp.filter_input(record) == b"[1.50,2e3,3]"  # number text kept
    out = dp.finish(record, b'{"predicted_label":1,"score":0.875}\n')
    assert out == b'{"id":"a-1","SageMakerOutput":{"predicted_label":1,"score":0.875}}'


def test_json_non_object_input_is_wrapped():
    # DG/API: "If the input is not a key-value pair object, SageMaker creates a new JSON file ... the input
    # data is stored under the SageMakerInput key and the results are stored in SageMakerOutput."
    dp = DataProcessing(join_source="Input", content_type=JSONL, accept=JSON)
    assert json.loads(dp.finish(b"[1,2,3]", b"[0.7]")) == {
        "SageMakerInput": [1, 2, 3],
        "SageMakerOutput": [0.7],
    }
    assert json.loads(dp.finish(b'"text"', b"0.1")) == {"SageMakerInput": "text", "SageMakerOutput": 0.1}


def test_json_whole_document_split_none():
    dp = DataProcessing("$.instances", "Input", "$.SageMakerOutput.predictions", JSON, JSON)
    doc = b'{"instances": [[1, 2], [3, 4]], "id": 9}'
    assert dp.filter_input(doc) == b"[[1,2],[3,4]]"
    assert dp.finish(doc, b'{"predictions": [0.25, 0.75]}') == b"[0.25,0.75]"


def test_json_reserved_key_is_an_error():
    dp = DataProcessing(join_source="Input", content_type=JSONL, accept=JSONL)
    with pytest.raises(ValueError, match="already has the key 'SageMakerOutput'"):
        dp.finish(b'{"SageMakerOutput": 1}', b"2")


def test_json_output_filter_without_join():
    dp = DataProcessing(output_filter="$.score", content_type="text/csv", accept=JSONL)
    assert dp.finish(b"1,2", b'{"label":1,"score":0.5}') == b"0.5"


def test_json_output_keeps_unicode_and_float_text():
    dp = DataProcessing(join_source="Input", content_type=JSONL, accept=JSONL)
    out = dp.finish('{"name":"Zoë","x":1.10}'.encode(), b"1E-7")
    assert out.decode() == '{"name":"Zoë","x":1.10,"SageMakerOutput":1E-7}'


def test_invalid_json_names_what_and_shows_the_record():
    dp = DataProcessing("$.features", content_type=JSONL, accept=JSONL)
    with pytest.raises(ValueError, match="input record is not valid JSON"):
        dp.filter_input(b"{not json")
    dp = DataProcessing(join_source="Input", content_type=JSONL, accept=JSONL)
    with pytest.raises(ValueError, match="model output is not valid JSON"):
        dp.finish(b"{}", b"0.1,0.2")


def test_json_missing_key_in_record():
    dp = DataProcessing("$.features", content_type=JSONL, accept=JSONL)
    with pytest.raises(ValueError, match=r"key 'features' not found"):
        dp.filter_input(b'{"id": 1}')
