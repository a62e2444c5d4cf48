"""The ``aialgs.data`` protobuf messages (Record, Value, Float32Tensor, ...), built at import time.

Built from a descriptor in a private pool rather than protoc output: generated code is tied to one
protobuf runtime version, and a private pool lets the SageMaker toolkit's own ``record_pb2`` (same
package name) load in the same process. ``record.proto`` beside this file is the schema.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str,
    number: int,
    ftype: int,
    label: int = _F.LABEL_OPTIONAL,
    type_name: str = "",
    packed: bool = False,
    oneof: int | None = None,
) -> _F:
    f = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True
    if oneof is not None:
        f.oneof_index = oneof
    return f


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="record.proto", package="aialgs.data", syntax="proto2")
    fd.options.java_package = "com.amazonaws.aialgorithms.proto"
    fd.options.java_outer_classname = "RecordProtos"
    rep = _F.LABEL_REPEATED
    for name, vtype in (
        ("Float32Tensor", _F.TYPE_FLOAT),
        ("Float64Tensor", _F.TYPE_DOUBLE),
        ("Int32Tensor", _F.TYPE_INT32),
    ):
        m = fd.message_type.add(name=name)
        m.field.extend(
            [
                _field("values", 1, vtype, rep, packed=True),
                _field("keys", 2, _F.TYPE_UINT64, rep, packed=True),
                _field("shape", 3, _F.TYPE_UINT64, rep, packed=True),
            ]
        )
    m = fd.message_type.add(name="Bytes")
    m.field.extend([_field("value", 1, _F.TYPE_BYTES, rep), _field("content_type", 2, _F.TYPE_STRING)])
    m = fd.message_type.add(name="Value")
    m.oneof_decl.add(name="value")
    m.field.extend(
        [
            _field("float32_tensor", 2, _F.TYPE_MESSAGE, type_name=".aialgs.data.Float32Tensor", oneof=0),
            _field("float64_tensor", 3, _F.TYPE_MESSAGE, type_name=".aialgs.data.Float64Tensor", oneof=0),
            _field("int32_tensor", 7, _F.TYPE_MESSAGE, type_name=".aialgs.data.Int32Tensor", oneof=0),
            _field("bytes", 9, _F.TYPE_MESSAGE, type_name=".aialgs.data.Bytes", oneof=0),
        ]
    )
    rec = fd.message_type.add(name="Record")
    for entry_name in ("FeaturesEntry", "LabelEntry"):
        e = rec.nested_type.add(name=entry_name)
        e.options.map_entry = True
        e.field.extend(
            [
                _field("key", 1, _F.TYPE_STRING),
                _field("value", 2, _F.TYPE_MESSAGE, type_name=".aialgs.data.Value"),
            ]
        )
    rec.field.extend(
        [
            _field("features", 1, _F.TYPE_MESSAGE, rep, type_name=".aialgs.data.Record.FeaturesEntry"),
            _field("label", 2, _F.TYPE_MESSAGE, rep, type_name=".aialgs.data.Record.LabelEntry"),
            _field("uid", 3, _F.TYPE_STRING),
            _field("metadata", 4, _F.TYPE_STRING),
            _field("configuration", 5, _F.TYPE_STRING),
        ]
    )
    return fd


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_build_file())


def _cls(name: str) -> type:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"aialgs.data.{name}"))


Float32Tensor = _cls("Float32Tensor")
Float64Tensor = _cls("Float64Tensor")
Int32Tensor = _cls("Int32Tensor")
Bytes = _cls("Bytes")
Value = _cls("Value")
Record = _cls("Record")

__all__ = ["Bytes", "Float32Tensor", "Float64Tensor", "Int32Tensor", "Record", "Value"]
