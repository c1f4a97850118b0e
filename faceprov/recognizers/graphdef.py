"""Read a binary TensorFlow GraphDef (a frozen ``.pb``) into the TF.js graph dict `TFJSGraph` runs.

A frozen GraphDef keeps its weights as inline ``Const`` tensors, so the result needs no weight
shards. The protobuf wire format is decoded here directly (about as long as the message
definitions would be), so reading a ``.pb`` needs neither TensorFlow nor its generated protos.
The dict has the shape ``google.protobuf.json_format.MessageToDict`` would give (camelCase keys,
bytes base64-encoded, int64 as strings), which is what a TF.js ``model.json`` holds.

Only the messages a frozen inference graph uses are decoded: GraphDef.node, NodeDef (name, op,
input, device, attr), AttrValue (s, i, f, b, type, shape, tensor, list), TensorProto and
TensorShapeProto. Anything else is skipped by its wire type, as protobuf itself does.
"""
from __future__ import annotations

import base64
import struct
from pathlib import Path

# tensorflow/core/framework/types.proto
DTYPES = {1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16", 6: "DT_INT8",
          7: "DT_STRING", 9: "DT_INT64", 10: "DT_BOOL", 19: "DT_HALF"}


class GraphDefError(ValueError):
    """The file is not a binary GraphDef this reader understands."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise GraphDefError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise GraphDefError("varint too long")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) for one message; value is int or bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise GraphDefError("truncated length-delimited field")
            v, i = buf[i:i + ln], i + ln
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise GraphDefError(f"unsupported wire type {wire}")
        yield field, wire, v


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(wire: int, v) -> list[int]:
    if wire == 0:
        return [_signed(v)]
    out, i = [], 0
    while i < len(v):
        x, i = _varint(v, i)
        out.append(_signed(x))
    return out


def _packed_floats(wire: int, v) -> list[float]:
    if wire == 5:
        return [struct.unpack("<f", v)[0]]
    return list(struct.unpack(f"<{len(v) // 4}f", v))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _shape(buf: bytes) -> dict:
    dims = []
    for f, _, v in _fields(buf):
        if f == 2:
            d = {}
            for g, _, w in _fields(v):
                if g == 1:
                    d["size"] = str(_signed(w))
                elif g == 2:
                    d["name"] = w.decode()
            dims.append(d)
        elif f == 3:
            return {"unknownRank": bool(v)}
    return {"dim": dims} if dims else {}


def _tensor(buf: bytes) -> dict:
    t: dict = {}
    for f, wire, v in _fields(buf):
        if f == 1:
            t["dtype"] = DTYPES.get(v, str(v))
        elif f == 2:
            t["tensorShape"] = _shape(v)
        elif f == 4:
            t["tensorContent"] = _b64(v)
        elif f == 5:
            t.setdefault("floatVal", []).extend(_packed_floats(wire, v))
        elif f == 7:
            t.setdefault("intVal", []).extend(_packed_varints(wire, v))
        elif f == 10:
            t.setdefault("int64Val", []).extend(str(x) for x in _packed_varints(wire, v))
        elif f == 11:
            t.setdefault("boolVal", []).extend(bool(x) for x in _packed_varints(wire, v))
        elif f == 8:
            t.setdefault("stringVal", []).append(_b64(v))
    return t


def _list(buf: bytes) -> dict:
    out: dict = {}
    for f, wire, v in _fields(buf):
        if f == 2:
            out.setdefault("s", []).append(_b64(v))
        elif f == 3:
            out.setdefault("i", []).extend(str(x) for x in _packed_varints(wire, v))
        elif f == 4:
            out.setdefault("f", []).extend(_packed_floats(wire, v))
        elif f == 5:
            out.setdefault("b", []).extend(bool(x) for x in _packed_varints(wire, v))
        elif f == 6:
            out.setdefault("type", []).extend(DTYPES.get(x, str(x)) for x in _packed_varints(wire, v))
        elif f == 7:
            out.setdefault("shape", []).append(_shape(v))
        elif f == 8:
            out.setdefault("tensor", []).append(_tensor(v))
    return out


def _attr_value(buf: bytes) -> dict:
    for f, wire, v in _fields(buf):
        if f == 1:
            return {"list": _list(v)}
        if f == 2:
            return {"s": _b64(v)}
        if f == 3:
            return {"i": str(_signed(v))}
        if f == 4:
            return {"f": struct.unpack("<f", v)[0]}
        if f == 5:
            return {"b": bool(v)}
        if f == 6:
            return {"type": DTYPES.get(v, str(v))}
        if f == 7:
            return {"shape": _shape(v)}
        if f == 8:
            return {"tensor": _tensor(v)}
    return {}


def _node(buf: bytes) -> dict:
    node: dict = {"input": [], "attr": {}}
    for f, _, v in _fields(buf):
        if f == 1:
            node["name"] = v.decode()
        elif f == 2:
            node["op"] = v.decode()
        elif f == 3:
            node["input"].append(v.decode())
        elif f == 4:
            node["device"] = v.decode()
        elif f == 5:
            key, val = "", {}
            for g, _, w in _fields(v):
                if g == 1:
                    key = w.decode()
                elif g == 2:
                    val = _attr_value(w)
            node["attr"][key] = val
    if "name" not in node or "op" not in node:
        raise GraphDefError("a NodeDef without name or op")
    return node


def parse_graphdef(data: bytes) -> dict:
    """Binary GraphDef bytes -> ``{"modelTopology": {"node": [...]}, "weightsManifest": []}``."""
    try:
        nodes = [_node(v) for f, wire, v in _fields(data) if f == 1 and wire == 2]
    except (GraphDefError, UnicodeDecodeError, struct.error, IndexError) as e:
        raise GraphDefError(f"not a binary GraphDef: {e}") from None
    if not nodes:
        raise GraphDefError("no nodes: not a binary GraphDef")
    return {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": []}


def read_graphdef(path: str | Path) -> dict:
    return parse_graphdef(Path(path).read_bytes())


def batch_reshapes(graph: dict) -> int:
    """Let every Reshape whose shape is an inline constant with a leading 1 take any batch.

    Freezing for one image folds the batch dimension into the shape constants (``[1, -1]``,
    ``[1, 512]``); the leading 1 becomes -1 so the graph runs on (N, ...) batches. A flatten
    (``[1, -1]``) becomes ``[-1, -1]``, which `TFJSGraph` reads as "keep the batch, flatten the
    rest" (TF itself would refuse two -1s, so the patched graph is only for this interpreter).
    Returns how many constants were patched."""
    nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}
    patched = 0
    for n in nodes.values():
        if n["op"] != "Reshape" or len(n["input"]) < 2:
            continue
        src = nodes.get(n["input"][1].split(":")[0].lstrip("^"))
        t = (src or {}).get("attr", {}).get("value", {}).get("tensor") if src and src["op"] == "Const" else None
        if not t or t.get("dtype") != "DT_INT32":
            continue
        if "tensorContent" in t:
            raw = bytearray(base64.b64decode(t["tensorContent"]))
            vals = list(struct.unpack(f"<{len(raw) // 4}i", raw))
        else:
            vals = list(t.get("intVal", []))
        if len(vals) >= 2 and vals[0] == 1:
            vals[0] = -1
            t.pop("intVal", None)
            t["tensorContent"] = _b64(struct.pack(f"<{len(vals)}i", *vals))
            patched += 1
    return patched
