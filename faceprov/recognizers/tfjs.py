"""TF.js graph models (``model.json`` + weight shards) as differentiable torch modules.

`TFJSGraph.from_json(path, inputs=..., outputs=...)` parses a TF.js *graph model*
(``format: graph-model``: ``modelTopology.node`` is a TensorFlow GraphDef in JSON, the weights are
described by ``weightsManifest``), keeps only the nodes needed to compute the requested outputs
from the requested inputs, and returns an ``nn.Module`` that runs them in topological order.
Weights become buffers; the module is differentiable w.r.t. its input.

TF.js graphs are NHWC. Internally 4-D activations produced by convolutions and pools stay in
torch's NCHW layout; every value carries a flag saying which layout it is in, and ops that care
(broadcasting against per-channel constants, reductions, padding, reshapes, concatenation,
softmax) translate axes or convert back to NHWC, so results always follow TF semantics. Outputs
are returned in TF (NHWC) layout.

Two generic build-time fusions (``fuse=True``, the default) keep the module fast without changing
results beyond float rounding: a convolution with a constant filter absorbs the per-channel
constant Mul/Add/Sub/BiasAdd chain that follows it (batch norm as converters leave it) into its
filter and bias, and chains of Relu/Relu6/Maximum/Minimum with scalar constants become one clamp.
Convolutions run on channels-last memory (about 2x faster on CPU).

Weight decoding follows tfjs-core ``io.decodeWeights``: float32/int32/bool tensors stored raw, or
quantised as uint8/uint16 (``value = q * scale + min``, rounded for int32) or float16.
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_NHWC_TO_NCHW = (0, 3, 1, 2)  # NCHW dims in terms of NHWC dims
_AXIS_IN_NCHW = (0, 2, 3, 1)  # where NHWC axis a lives in an NCHW tensor


class UnsupportedOpError(NotImplementedError):
    """The graph uses a TF op (or an op variant) this interpreter does not implement."""


# ----------------------------------------------------------------------------- weights

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8,
           "uint16": np.uint16, "float16": np.float16}


def decode_weights(manifest: list[dict], base_dir: Path) -> dict[str, np.ndarray]:
    """Weights of a TF.js ``weightsManifest``; shard paths are resolved relative to base_dir."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((Path(base_dir) / p).read_bytes() for p in group["paths"])
        off = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            n = int(np.prod(shape)) if shape else 1
            dtype = spec["dtype"]
            if dtype not in ("float32", "int32", "bool"):
                raise UnsupportedOpError(f"weight {spec['name']!r}: dtype {dtype!r} not supported")
            q = spec.get("quantization")
            if q:
                qd = q["dtype"]
                if qd not in ("uint8", "uint16", "float16"):
                    raise UnsupportedOpError(f"weight {spec['name']!r}: quantization {qd!r} not supported")
                raw = np.frombuffer(buf, _DTYPES[qd], n, off)
                off += n * raw.itemsize
                if qd == "float16":
                    if dtype != "float32":
                        raise ValueError(f"weight {spec['name']!r}: float16 quantization of {dtype}")
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                    if dtype == "int32":
                        arr = np.round(arr).astype(np.int32)
            else:
                raw = np.frombuffer(buf, _DTYPES[dtype], n, off)
                off += n * raw.itemsize
                arr = raw.copy()
            out[spec["name"]] = arr.reshape(shape)
        if off != len(buf):
            raise ValueError(f"weight shards {group['paths']} hold {len(buf)} bytes, manifest uses {off}")
    return out


def _attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return a["type"]
    if "tensor" in a:
        return a["tensor"]
    return default


def _inline_const(node: dict) -> np.ndarray:
    """A Const whose value is stored in the graph itself (attr ``value``)."""
    t = _attr(node, "value")
    if t is None:
        raise ValueError(f"Const {node['name']!r} has neither a weight nor an inline value")
    shape = [int(d.get("size", 1)) for d in t.get("tensorShape", {}).get("dim", [])]
    dt = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_BOOL": np.bool_}.get(t.get("dtype"))
    if dt is None:
        raise UnsupportedOpError(f"Const {node['name']!r}: dtype {t.get('dtype')} not supported")
    if "tensorContent" in t:
        arr = np.frombuffer(base64.b64decode(t["tensorContent"]), dt).copy()
    else:
        vals = t.get("floatVal") or t.get("intVal") or t.get("boolVal") or []
        arr = np.array(vals, dtype=dt)
        if arr.size == 1 and shape:
            arr = np.full(shape, arr.item(), dtype=dt)
    return arr.reshape(shape)


# ----------------------------------------------------------------------------- layout helpers
# A value is (tensor, nchw): nchw=True means a 4-D tensor whose TF shape is NHWC but which is
# stored permuted to NCHW.


def _nhwc(v):
    t, nchw = v
    return t.permute(0, 2, 3, 1) if nchw else t


def _nchw(v):
    t, nchw = v
    if nchw:
        return t
    if t.ndim != 4:
        raise ValueError(f"expected a 4-D NHWC tensor, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def _as_nchw_operand(t: torch.Tensor) -> torch.Tensor:
    """A plain (TF-layout) operand to broadcast against an NCHW-stored 4-D tensor."""
    if t.ndim == 0 or t.numel() == 1:
        return t.reshape(()) if t.ndim <= 4 else t
    t = t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))
    return t.permute(0, 3, 1, 2)


def _binary(fn: Callable) -> Callable:
    def op(a, b):
        if a[1] or b[1]:
            if a[0].ndim > 4 or b[0].ndim > 4:
                return fn(_nhwc(a), _nhwc(b)), False
            ta = a[0] if a[1] else _as_nchw_operand(a[0])
            tb = b[0] if b[1] else _as_nchw_operand(b[0])
            return fn(ta, tb), True
        return fn(a[0], b[0]), False

    return op


def _unary(fn: Callable) -> Callable:
    return lambda a: (fn(a[0]), a[1])


def _tf_pad_amounts(in_size: int, k: int, stride: int, dilation: int, padding: str,
                    explicit: Sequence[int] = ()) -> tuple[int, int]:
    if padding == "VALID":
        return 0, 0
    if padding == "EXPLICIT":
        return int(explicit[0]), int(explicit[1])
    if padding != "SAME":
        raise UnsupportedOpError(f"padding {padding!r}")
    eff = (k - 1) * dilation + 1
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + eff - in_size, 0)
    return total // 2, total - total // 2  # TF puts the extra pixel at the bottom/right


def _spatial_pads(x: torch.Tensor, kh, kw, strides, dilations, padding, explicit) -> tuple[int, int, int, int]:
    ph = _tf_pad_amounts(x.shape[2], kh, strides[0], dilations[0], padding, explicit[2:4])
    pw = _tf_pad_amounts(x.shape[3], kw, strides[1], dilations[1], padding, explicit[4:6])
    return ph[0], ph[1], pw[0], pw[1]


def _conv(x, w, bias, strides, dilations, padding, explicit, groups):
    """x NCHW, w OIHW; TF padding semantics. Channels-last memory is much faster on CPU."""
    x = x.contiguous(memory_format=torch.channels_last)
    t, b, l, r = _spatial_pads(x, w.shape[2], w.shape[3], strides, dilations, padding, explicit)
    if t == b and l == r:
        return F.conv2d(x, w, bias, strides, (t, l), dilations, groups)
    return F.conv2d(F.pad(x, (l, r, t, b)), w, bias, strides, 0, dilations, groups)


_FUSABLE = {"BiasAdd", "FusedBatchNorm", "Prelu", "Relu", "Relu6", "Elu", "Sigmoid", "LeakyRelu"}


def _check_fused(op: str, fused: list[str]) -> list[str]:
    bad = [f for f in fused if f not in _FUSABLE]
    if bad:
        raise UnsupportedOpError(f"{op} with fused op(s) {', '.join(bad)}")
    return fused


def _activation(name: str, x, alpha: float = 0.2):
    n = name.lower()
    if n == "relu":
        return x.relu()
    if n == "relu6":
        return x.clamp(0, 6)
    if n == "elu":
        return F.elu(x)
    if n == "sigmoid":
        return x.sigmoid()
    if n == "leakyrelu":
        return F.leaky_relu(x, alpha)
    raise UnsupportedOpError(f"fused activation {name!r}")


def _fused_tail(y, nchw: bool, fused: list[str], args: list, eps: float, alpha: float):
    """Apply a _Fused* op's fused_ops list; args are the extra inputs (values) in order."""
    v = (y, nchw)
    i = 0
    for f in fused:
        if f == "BiasAdd":
            v = _binary(torch.add)(v, args[i])
            i += 1
        elif f == "FusedBatchNorm":
            scale, offset, mean, var = (a[0] for a in args[i:i + 4])
            i += 4
            mul = scale * torch.rsqrt(var + eps)
            v = _binary(torch.add)(_binary(torch.mul)(v, (mul, False)), (offset - mean * mul, False))
        elif f == "Prelu":
            alpha_t = args[i]
            i += 1
            neg = _binary(torch.mul)(v, alpha_t)
            v = (torch.where(v[0] >= 0, v[0], neg[0]), v[1])
        else:
            v = (_activation(f, v[0], alpha=alpha), v[1])
    return v


def _const_ints(v) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _reduce(fn: Callable, node: dict) -> Callable:
    keep = bool(_attr(node, "keep_dims", False))

    def op(x, axes):
        t, nchw = x
        axes = [a % t.ndim for a in _const_ints(axes)]
        if not axes:
            return x
        if nchw:
            mapped = [_AXIS_IN_NCHW[a] for a in axes]
            remaining = [d for d in _NHWC_TO_NCHW if d not in axes]
            if keep or remaining == sorted(remaining):
                return fn(t, mapped, keep), keep
            t = _nhwc(x)
        return fn(t, axes, keep), False

    return op


# ----------------------------------------------------------------------------- op table


def _make_op(node: dict) -> tuple[Callable, str | None]:
    """(function, name of a weight transform for input 1) for one node. Functions take values."""
    op = node["op"]
    A = lambda k, d=None: _attr(node, k, d)  # noqa: E731

    if op in ("Identity", "StopGradient", "Snapshot"):
        return (lambda x, *rest: x), None
    unary = {
        "Relu": torch.relu, "Relu6": lambda t: t.clamp(0, 6), "Elu": F.elu, "Selu": F.selu,
        "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Abs": torch.abs, "Square": torch.square,
        "Sqrt": torch.sqrt, "Rsqrt": torch.rsqrt, "Exp": torch.exp, "Log": torch.log,
        "Neg": torch.neg, "Reciprocal": torch.reciprocal, "Softplus": F.softplus,
        "LeakyRelu": lambda t: F.leaky_relu(t, A("alpha", 0.2)),
    }
    if op in unary:
        return _unary(unary[op]), None
    binary = {
        "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub,
        "Mul": torch.mul, "RealDiv": torch.div, "Div": torch.div, "Maximum": torch.maximum,
        "Minimum": torch.minimum, "Pow": torch.pow,
        "SquaredDifference": lambda a, b: (a - b).square(),
    }
    if op in binary:
        if op == "BiasAdd" and A("data_format", "NHWC") != "NHWC":
            raise UnsupportedOpError(f"{op} with data_format {A('data_format')}")
        return _binary(binary[op]), None
    if op == "AddN":
        def addn(*xs):
            acc = xs[0]
            for x in xs[1:]:
                acc = _binary(torch.add)(acc, x)
            return acc
        return addn, None
    if op == "Prelu":
        def prelu(x, alpha):
            neg = _binary(torch.mul)(x, alpha)
            return torch.where(x[0] >= 0, x[0], neg[0]), x[1]
        return prelu, None
    if op == "Cast":
        dst = A("DstT", "DT_FLOAT")
        if dst != "DT_FLOAT":
            raise UnsupportedOpError(f"Cast to {dst}")
        return _unary(lambda t: t.float()), None

    if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        if A("data_format", "NHWC") != "NHWC":
            raise UnsupportedOpError(f"{op} with data_format {A('data_format')}")
        depthwise = "Depthwise" in op
        s, d = A("strides", [1, 1, 1, 1]), A("dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
        strides, dil = (s[1], s[2]), (d[1], d[2])
        padding, explicit = A("padding", "VALID"), A("explicit_paddings", []) or [0] * 8
        fused = _check_fused(op, A("fused_ops", []) or [])
        eps, alpha = A("epsilon", 1e-3) or 1e-3, A("leakyrelu_alpha", 0.2)

        def conv(x, w, *args, bias=None, fused=fused):
            xin = _nchw(x)
            groups = xin.shape[1] if depthwise else 1
            y = _conv(xin, w[0], bias, strides, dil, padding, explicit, groups)
            return _fused_tail(y, True, fused, list(args), eps, alpha)

        return conv, ("depthwise" if depthwise else "conv")

    if op in ("MatMul", "_FusedMatMul"):
        ta, tb = bool(A("transpose_a", False)), bool(A("transpose_b", False))
        fused = _check_fused(op, A("fused_ops", []) or [])
        eps, alpha = A("epsilon", 1e-3) or 1e-3, A("leakyrelu_alpha", 0.2)

        def matmul(a, b, *args):
            x, w = _nhwc(a), _nhwc(b)
            y = (x.transpose(-1, -2) if ta else x) @ (w.transpose(-1, -2) if tb else w)
            return _fused_tail(y, False, fused, list(args), eps, alpha)

        return matmul, None

    if op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
        if A("data_format", "NHWC") != "NHWC":
            raise UnsupportedOpError(f"{op} with data_format {A('data_format')}")
        eps = A("epsilon", 1e-3)
        return (lambda x, sc, of, me, va: _fused_tail(x[0], x[1], ["FusedBatchNorm"],
                                                     [sc, of, me, va], eps, 0.0)), None

    if op in ("MaxPool", "AvgPool"):
        if A("data_format", "NHWC") != "NHWC":
            raise UnsupportedOpError(f"{op} with data_format {A('data_format')}")
        k, s = A("ksize"), A("strides")
        ksize, strides, padding = (k[1], k[2]), (s[1], s[2]), A("padding", "VALID")
        explicit = A("explicit_paddings", []) or [0] * 8

        def pool(x):
            xin = _nchw(x)
            t, b, l, r = _spatial_pads(xin, ksize[0], ksize[1], strides, (1, 1), padding, explicit)
            if op == "MaxPool":
                xp = F.pad(xin, (l, r, t, b), value=-math.inf) if t + b + l + r else xin
                return F.max_pool2d(xp, ksize, strides), True
            if t + b + l + r == 0:
                return F.avg_pool2d(xin, ksize, strides), True
            # TF averages over the valid (unpadded) pixels only.
            ones = torch.ones_like(xin[:1, :1])
            num = F.avg_pool2d(F.pad(xin, (l, r, t, b)), ksize, strides)
            den = F.avg_pool2d(F.pad(ones, (l, r, t, b)), ksize, strides)
            return num / den, True

        return pool, None

    if op in ("Pad", "PadV2", "MirrorPad"):
        mode = {"REFLECT": "reflect", "SYMMETRIC": "replicate"}.get(A("mode", ""), "constant")
        if op == "MirrorPad" and A("mode") == "SYMMETRIC":
            raise UnsupportedOpError("MirrorPad mode SYMMETRIC")

        def pad(x, paddings, value=None):
            t, nchw = x
            p = np.asarray(paddings).reshape(-1, 2).tolist()
            order = _NHWC_TO_NCHW if nchw else range(t.ndim)
            flat: list[int] = []
            for dim in reversed(list(order)):
                flat += [int(p[dim][0]), int(p[dim][1])]
            while len(flat) > 2 and flat[-2:] == [0, 0]:
                flat = flat[:-2]
            if mode == "constant":
                cval = 0.0 if value is None else float(value[0].reshape(-1)[0])
                return F.pad(t, flat, value=cval), nchw
            return F.pad(t, flat, mode=mode), nchw

        return pad, None

    reducers = {
        "Mean": lambda t, ax, k: t.mean(dim=ax, keepdim=k),
        "Sum": lambda t, ax, k: t.sum(dim=ax, keepdim=k),
        "Max": lambda t, ax, k: t.amax(dim=ax, keepdim=k),
        "Min": lambda t, ax, k: t.amin(dim=ax, keepdim=k),
        "Prod": lambda t, ax, k: _prod(t, ax, k),
    }
    if op in reducers:
        return _reduce(reducers[op], node), None

    if op in ("Softmax", "LogSoftmax"):
        f = F.softmax if op == "Softmax" else F.log_softmax
        return (lambda x: (f(x[0], dim=1 if x[1] else -1), x[1])), None
    if op == "Reshape":
        def reshape(x, shape):
            t, s = _nhwc(x), _const_ints(shape)
            if len(s) > 1 and s[0] == -1 and -1 in s[1:]:
                s = [t.shape[0], *s[1:]]  # a batch-patched flatten (graphdef.batch_reshapes)
            return t.reshape(s), False
        return reshape, None
    if op == "Squeeze":
        dims = A("squeeze_dims", []) or []

        def squeeze(x):
            t = _nhwc(x)
            ds = [d % t.ndim for d in dims] or [i for i, n in enumerate(t.shape) if n == 1]
            return t.squeeze(tuple(ds)) if ds else t, False

        return squeeze, None
    if op == "ExpandDims":
        return (lambda x, axis: (_nhwc(x).unsqueeze(_const_ints(axis)[0]), False)), None
    if op == "Transpose":
        return (lambda x, perm: (_nhwc(x).permute(_const_ints(perm)), False)), None
    if op == "ConcatV2":
        def concat(*xs):
            vals, axis = xs[:-1], _const_ints(xs[-1])[0]
            if all(v[1] for v in vals):
                return torch.cat([v[0] for v in vals], dim=_AXIS_IN_NCHW[axis % 4]), True
            return torch.cat([_nhwc(v) for v in vals], dim=axis), False
        return concat, None
    if op == "StridedSlice":
        if A("ellipsis_mask", 0) or A("new_axis_mask", 0):
            raise UnsupportedOpError("StridedSlice with ellipsis_mask/new_axis_mask")
        bm, em, sm = A("begin_mask", 0), A("end_mask", 0), A("shrink_axis_mask", 0)

        def strided_slice(x, begin, end, strides):
            t = _nhwc(x)
            idx: list = []
            for i, (b, e, s) in enumerate(zip(_const_ints(begin), _const_ints(end), _const_ints(strides))):
                if sm >> i & 1:
                    idx.append(b)
                    continue
                if s < 0:
                    raise UnsupportedOpError("StridedSlice with negative strides")
                idx.append(slice(None if bm >> i & 1 else b, None if em >> i & 1 else e, s))
            return t[tuple(idx)], False

        return strided_slice, None
    raise UnsupportedOpError(op)


def _prod(t, axes, keep):
    for a in sorted(axes, reverse=True):
        t = t.prod(dim=a, keepdim=keep)
    return t


def _transform_weight(w: np.ndarray, kind: str | None) -> np.ndarray:
    if kind == "conv":  # HWIO -> OIHW
        return np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    if kind == "depthwise":  # H W C M -> (C*M) 1 H W, output channel c*M+m as in TF
        h, wd, c, m = w.shape
        return np.ascontiguousarray(w.reshape(h, wd, c * m).transpose(2, 0, 1)[:, None])
    return w


def _per_channel(v: np.ndarray | None, c: int) -> np.ndarray | None:
    """A float constant that broadcasts per output channel of an NHWC tensor, as a (c,) vector."""
    if v is None or v.dtype.kind != "f":
        return None
    if v.size == 1:
        return np.full(c, float(v.reshape(-1)[0]))
    if v.size == c and v.shape[-1] == c:
        return v.reshape(-1).astype(np.float64)
    return None


def _data_inputs(node: dict) -> list[str]:
    return [_strip(n) for n in node.get("input", []) if not n.startswith("^")]


def _strip(name: str) -> str:
    name = name.lstrip("^")
    return name[:-2] if name.endswith(":0") else name


class TFJSGraph(nn.Module):
    """A TF.js graph model, restricted to the subgraph from `inputs` to `outputs`, as a module.

    ``forward(*xs, layout="NHWC")`` takes one tensor per input (NHWC as in TF, or NCHW images
    when ``layout="NCHW"``) and returns the output tensor (or a tuple for several outputs).
    """

    def __init__(self, graph: dict, weights: dict[str, np.ndarray],
                 inputs: str | Sequence[str] | None = None, outputs: str | Sequence[str] | None = None,
                 fuse: bool = True):
        super().__init__()
        nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}
        if inputs is None:
            inputs = [n for n, v in nodes.items() if v["op"] == "Placeholder"]
        if outputs is None:
            outputs = list(graph.get("signature", {}).get("outputs", {}))[:1]
        self.inputs = [_strip(n) for n in ([inputs] if isinstance(inputs, str) else inputs)]
        self.outputs = [_strip(n) for n in ([outputs] if isinstance(outputs, str) else outputs)]
        for n in self.inputs + self.outputs:
            if n not in nodes:
                raise KeyError(f"node {n!r} is not in the graph")

        order = self._toposort(nodes)
        unsupported = sorted({e for n in order if (e := self._unsupported(nodes[n]))})
        if unsupported:
            raise UnsupportedOpError(
                "TF.js graph uses unsupported op(s): " + ", ".join(unsupported)
                + " (needed for " + ", ".join(self.outputs) + ")")

        self._buffers_by_key: dict[tuple[str, str | None], str] = {}
        self.steps: list[tuple[str, Callable, list[tuple[str, object]]]] = []
        self.ops: list[str] = [nodes[n]["op"] for n in order if n not in self.inputs]
        self._nodes, self._weights = nodes, weights
        consumers: dict[str, list[str]] = {o: ["<output>"] for o in self.outputs}
        for name in order:
            if name not in self.inputs:
                for src in _data_inputs(nodes[name]):
                    consumers.setdefault(src, []).append(name)
        self._consumers = consumers
        absorbed: set[str] = set()
        for name in order:
            node = nodes[name]
            if name in self.inputs or node["op"] == "Const" or name in absorbed:
                continue
            step = (self._fold_conv(node, absorbed) if fuse else None) \
                or (self._fold_clamp(node, absorbed) if fuse else None)
            if step is None:
                fn, w_kind = _make_op(node)
                refs = [self._ref(src, w_kind if i == 1 else None, node)
                        for i, src in enumerate(_data_inputs(node))]
                step = (name, fn, refs)
            self.steps.append(step)
        del self._nodes, self._weights, self._consumers
        # drop values from the environment after their last use
        last: dict[str, int] = {}
        for i, (_, _, refs) in enumerate(self.steps):
            for k, v in refs:
                if k == "v":
                    last[v] = i
        self._free = [[v for v, j in last.items() if j == i and v not in self.outputs]
                      for i in range(len(self.steps))]

    @classmethod
    def from_json(cls, path: str | Path, inputs=None, outputs=None, fuse: bool = True) -> "TFJSGraph":
        path = Path(path)
        graph = json.loads(path.read_text())
        if graph.get("format") not in (None, "graph-model"):
            raise ValueError(f"{path}: format {graph.get('format')!r} is not a TF.js graph model")
        weights = decode_weights(graph["weightsManifest"], path.parent)
        return cls(graph, weights, inputs, outputs, fuse)

    def _toposort(self, nodes: dict) -> list[str]:
        order, state = [], {}
        stack = [(o, False) for o in self.outputs]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ValueError(f"cycle in graph at {name!r}")
            state[name] = 1
            stack.append((name, True))
            if name in self.inputs:
                continue
            for src in nodes[name].get("input", []):
                src = _strip(src)
                if src not in nodes:
                    raise KeyError(f"node {name!r} reads unknown node {src!r}")
                if state.get(src) != 2:
                    if state.get(src) == 1:
                        raise ValueError(f"cycle in graph at {src!r}")
                    stack.append((src, False))
        return order

    def _unsupported(self, node: dict) -> str | None:
        """None if the node can run, else what is missing (the op, or op + variant)."""
        if node["op"] == "Const" or node["name"] in self.inputs:
            return None
        if node["op"] == "Placeholder":
            return f"Placeholder {node['name']!r} (a graph input that was not given as an input)"
        try:
            _make_op(node)
            return None
        except UnsupportedOpError as e:
            return str(e)

    def _const(self, name: str, value: np.ndarray, kind: str | None) -> str:
        key = (name, kind)
        if key not in self._buffers_by_key:
            buf = f"w{len(self._buffers_by_key)}"
            self.register_buffer(buf, torch.from_numpy(_transform_weight(value, kind).astype(np.float32)))
            self._buffers_by_key[key] = buf
        return self._buffers_by_key[key]

    # -- building helpers -------------------------------------------------------------------
    def _const_value(self, src: str) -> np.ndarray | None:
        if src in self.inputs or self._nodes[src]["op"] != "Const":
            return None
        return self._weights[src] if src in self._weights else _inline_const(self._nodes[src])

    def _ref(self, src: str, kind: str | None, node: dict) -> tuple[str, object]:
        value = self._const_value(src)
        if value is None:
            if kind:
                raise UnsupportedOpError(f"{node['op']} {node['name']!r} with a non-constant filter")
            return "v", src
        if value.dtype.kind in "iub":
            return "s", value  # shapes, axes, paddings: static
        return "c", self._const(src, value, kind)

    def _single_consumer(self, name: str) -> dict | None:
        cons = self._consumers.get(name, [])
        return self._nodes[cons[0]] if len(cons) == 1 and cons[0] != "<output>" else None

    def _fold_conv(self, node: dict, absorbed: set[str]):
        """Conv with a constant filter + following per-channel Mul/Add/Sub by constants (batch
        norm as the converter leaves it, BiasAdd) -> one conv with scaled filter and a bias."""
        fn, w_kind = _make_op(node)
        ins = _data_inputs(node)
        if not w_kind or self._const_value(ins[1]) is None:
            return None
        w = _transform_weight(self._const_value(ins[1]), w_kind).astype(np.float64)
        cout = w.shape[0]
        fused, args = list(_attr(node, "fused_ops", []) or []), ins[2:]
        bias = None
        if fused[:1] == ["BiasAdd"] and (b := _per_channel(self._const_value(args[0]), cout)) is not None:
            bias, fused, args = b, fused[1:], args[1:]
        tail = node["name"]
        while not fused and (nxt := self._single_consumer(tail)) is not None:
            nins = _data_inputs(nxt)
            if nxt["op"] not in ("Mul", "Add", "AddV2", "BiasAdd", "Sub") or len(nins) != 2 \
                    or nins[0] == nins[1] or (nxt["op"] == "Sub" and nins[0] != tail):
                break
            vec = _per_channel(self._const_value(nins[1] if nins[0] == tail else nins[0]), cout)
            if vec is None:
                break
            if nxt["op"] == "Mul":
                w = w * vec[:, None, None, None]
                bias = None if bias is None else bias * vec
            else:
                bias = (0.0 if bias is None else bias) + (-vec if nxt["op"] == "Sub" else vec)
            absorbed.add(nxt["name"])
            tail = nxt["name"]
        refs: list[tuple[str, object]] = [self._ref(ins[0], None, node),
                                          ("c", self._const(node["name"] + "/folded_filter", w, None))]
        if bias is not None:
            refs.append(("c", self._const(node["name"] + "/folded_bias", bias, None)))
            step_fn = lambda x, w, b, *a, _f=fused: fn(x, w, *a, bias=b[0], fused=_f)  # noqa: E731
        else:
            step_fn = lambda x, w, *a, _f=fused: fn(x, w, *a, fused=_f)  # noqa: E731
        refs += [self._ref(a, None, node) for a in args]
        return tail, step_fn, refs

    def _clamp_bounds(self, node: dict):
        """(input, lo, hi) if node is Relu/Relu6 or Maximum/Minimum with a scalar constant."""
        op, ins = node["op"], _data_inputs(node)
        if op in ("Relu", "Relu6") and len(ins) == 1:
            return ins[0], 0.0, (6.0 if op == "Relu6" else math.inf)
        if op in ("Maximum", "Minimum") and len(ins) == 2:
            vals = [self._const_value(i) for i in ins]
            k = [j for j in (0, 1) if vals[j] is not None and vals[j].size == 1 and vals[j].dtype.kind == "f"]
            if len(k) != 1 or vals[1 - k[0]] is not None:
                return None
            c = float(vals[k[0]].reshape(-1)[0])
            lo, hi = (c, math.inf) if op == "Maximum" else (-math.inf, c)
            return ins[1 - k[0]], lo, hi
        return None

    def _fold_clamp(self, node: dict, absorbed: set[str]):
        """Chains like Relu -> Minimum(6) -> Maximum(0) -> one clamp."""
        first = self._clamp_bounds(node)
        if first is None:
            return None
        src, lo, hi = first
        tail = node["name"]
        while (nxt := self._single_consumer(tail)) is not None:
            b = self._clamp_bounds(nxt)
            if b is None or b[0] != tail:
                break
            lo2, hi2 = b[1], b[2]
            if max(lo, lo2) > min(hi, hi2):
                break
            lo, hi = max(lo, lo2), min(hi, hi2)
            absorbed.add(nxt["name"])
            tail = nxt["name"]
        lo_, hi_ = (None if lo == -math.inf else lo), (None if hi == math.inf else hi)
        return tail, _unary(lambda t: t.clamp(lo_, hi_)), [self._ref(src, None, node)]

    def forward(self, *xs: torch.Tensor, layout: str = "NHWC"):
        if len(xs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} input(s) ({', '.join(self.inputs)}), got {len(xs)}")
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be NHWC or NCHW, not {layout!r}")
        env: dict[str, tuple[torch.Tensor, bool]] = {
            n: (x, layout == "NCHW" and x.ndim == 4) for n, x in zip(self.inputs, xs)}
        for (name, fn, refs), free in zip(self.steps, self._free):
            args = []
            for kind, ref in refs:
                if kind == "v":
                    args.append(env[ref])
                elif kind == "c":
                    args.append((getattr(self, ref), False))
                else:
                    args.append(ref)
            env[name] = fn(*args)
            for v in free:
                env.pop(v, None)
        outs = tuple(_nhwc(env[o]) for o in self.outputs)
        return outs[0] if len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return f"inputs={self.inputs}, outputs={self.outputs}, nodes={len(self.steps)}"


def op_counts(path: str | Path) -> dict[str, int]:
    """Op histogram of a graph json (all nodes), for diagnostics."""
    graph = json.loads(Path(path).read_text())
    counts: dict[str, int] = {}
    for n in graph["modelTopology"]["node"]:
        counts[n["op"]] = counts.get(n["op"], 0) + 1
    return counts
