"""TensorFlow.js graph models (a model.json and its .bin shards) read into a PyTorch module that runs the
graph's nodes in order, every float weight an `nn.Parameter`, so that the network fine-tunes.

Written by hand: no maintained library reads TF.js graph models into PyTorch (tfjs-to-tf needs
TensorFlow, and onnx2torch would need a TensorFlow-to-ONNX step first). The reader supports the ops
listed in OPS and stops with a TfjsGraphError naming any other op and its node.

TF.js runs NHWC; this module runs NCHW: its input is (B, C, H, W), and every 4-D tensor inside is held
as NCHW, constants meeting one are turned to match, axes are mapped (NHWC_TO_NCHW), kernels are stored
as PyTorch wants them (HWIO -> OIHW; depthwise HWCM -> (C*M)1HW) and TF's 'SAME' padding is applied
exactly, asymmetric (the extra row and column at the end) when TF's would be.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.weights import WeightsError

NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}
DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
QUANTISED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


class TfjsGraphError(WeightsError):
    """A TF.js graph model this reader cannot read: a damaged file, or an op or setting it does not support."""


# ---------------------------------------------------------------- the files

def read_model_json(path: str | Path) -> dict:
    """The parsed model.json of a TF.js graph model, or a WeightsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no TF.js model file '{path}'")
    try:
        model = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TfjsGraphError(f"cannot read TF.js model {path} ({exc})") from None
    if not isinstance(model, dict) or "modelTopology" not in model or "weightsManifest" not in model:
        raise TfjsGraphError(f"{path} is not a TF.js graph model (no modelTopology or weightsManifest)")
    return model


def dequantise(raw: bytes, spec: dict) -> np.ndarray:
    """One weight's values from its bytes, as TF.js decodes them: uint8/uint16 as value * scale + min
    (rounded for int32 weights), float16 widened to float32."""
    shape = [int(s) for s in spec.get("shape", [])]
    dtype = spec["dtype"]
    quant = spec.get("quantization")
    if not quant:
        return np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape).copy()
    stored = np.frombuffer(raw, dtype=QUANTISED[quant["dtype"]]).astype(np.float64)
    if quant["dtype"] == "float16":
        values = stored
    else:
        values = stored * float(quant["scale"]) + float(quant["min"])
        values = np.round(values) if dtype == "int32" else values
    return values.astype(DTYPES[dtype]).reshape(shape)


def stored_size(spec: dict) -> int:
    """The bytes one weight takes in the .bin."""
    quant = spec.get("quantization")
    if spec["dtype"] not in DTYPES or (quant and quant.get("dtype") not in QUANTISED):
        raise TfjsGraphError(f"weight {spec.get('name')}: dtype {spec['dtype']} "
                             f"{'quantised as ' + quant.get('dtype') if quant else ''} is not supported")
    itemsize = np.dtype(QUANTISED[quant["dtype"]] if quant else DTYPES[spec["dtype"]]).itemsize
    return itemsize * math.prod(int(s) for s in spec.get("shape", []))


def read_weights(model: dict, folder: str | Path) -> dict[str, np.ndarray]:
    """Every weight of the manifest by name, read from the .bin shards beside model.json; the shards
    must hold exactly the bytes the manifest describes."""
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        paths = [Path(folder) / p for p in group["paths"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise WeightsError(f"the TF.js model's weights file {missing[0]} is missing")
        data = b"".join(p.read_bytes() for p in paths)
        offset = 0
        for spec in group["weights"]:
            size = stored_size(spec)
            if offset + size > len(data):
                raise TfjsGraphError(f"{paths[0]}: the weights end early, at {spec['name']}")
            weights[spec["name"]] = dequantise(data[offset:offset + size], spec)
            offset += size
        if offset != len(data):
            raise TfjsGraphError(f"{paths[0]}: {len(data) - offset} bytes the manifest does not describe")
    return weights


# ---------------------------------------------------------------- a node's attributes

def attr(node: dict, key: str, default=None):
    """A node attribute decoded from the json (strings are base64 there), or `default`."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        return ([base64.b64decode(s).decode() for s in items.get("s", [])]
                + [int(i) for i in items.get("i", [])] + [float(f) for f in items.get("f", [])])
    for kind, cast in (("s", lambda s: base64.b64decode(s).decode()), ("i", int), ("f", float), ("b", bool),
                       ("type", str)):
        if kind in value:
            return cast(value[kind])
    return default


@dataclass
class Step:
    """One node to run: its op, its inputs' names, which of them are constants, its decoded settings."""
    name: str
    op: str
    inputs: list[str]
    const: list[bool]
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- layout and padding

def channel_view(t: torch.Tensor) -> torch.Tensor:
    """A constant written for NHWC broadcasting (rank <= 4: per channel, scalar...) made to broadcast on NCHW."""
    if t.dim() == 0:
        return t
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(0, 3, 1, 2)


def as_nchw_operands(step: Step, args: list) -> list:
    """The operands of an elementwise op: constants turned to NCHW where they meet a 4-D tensor."""
    if not any(isinstance(a, torch.Tensor) and a.dim() == 4 and not c for a, c in zip(args, step.const)):
        return args
    return [channel_view(a) if c and isinstance(a, torch.Tensor) else a for a, c in zip(args, step.const)]


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's 'SAME' padding of one dimension: (before, after), the odd pixel after."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def spatial_pads(step: Step, x: torch.Tensor, kernel: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for the node's padding setting: SAME, VALID or EXPLICIT."""
    padding, (sh, sw), (dh, dw) = step.settings["padding"], step.settings["strides"], step.settings["dilations"]
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "EXPLICIT":
        p = step.settings["explicit"]
        return p[4], p[5], p[2], p[3]
    # Plain ints, also while torch.onnx traces: the pads of an exported graph are then constants ONNX Runtime folds
    # into its convolutions, instead of arithmetic on the input's shape that breaks its blocked-layout chain.
    top, bottom = same_pads(int(x.shape[2]), kernel[0], sh, dh)
    left, right = same_pads(int(x.shape[3]), kernel[1], sw, dw)
    return left, right, top, bottom


def padded(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> tuple[torch.Tensor, object]:
    """The input and the padding to give the PyTorch op: symmetric padding is left to the op, else F.pad."""
    left, right, top, bottom = pads
    if left == right and top == bottom:
        return x, (top, left)
    return F.pad(x, pads, value=value), 0


def settings_of(node: dict) -> dict:
    """The attributes the ops read, decoded once; NCHW-format nodes are refused (TF.js converts to NHWC)."""
    fmt = attr(node, "data_format", "NHWC")
    if fmt not in ("NHWC", ""):
        raise TfjsGraphError(f"node {node['name']} ({node['op']}): data_format {fmt} is not supported (NHWC only)")
    nhwc = lambda key, default: tuple((attr(node, key) or default)[1:3])  # noqa: E731 (H and W of an NHWC list)
    return {"strides": nhwc("strides", [1, 1, 1, 1]), "dilations": nhwc("dilations", [1, 1, 1, 1]),
            "ksize": nhwc("ksize", [1, 1, 1, 1]), "padding": attr(node, "padding", "VALID"),
            "explicit": attr(node, "explicit_paddings", []), "fused": attr(node, "fused_ops", []),
            "keep_dims": attr(node, "keep_dims", False), "alpha": attr(node, "leakyrelu_alpha", 0.2),
            "transpose_a": attr(node, "transpose_a", False), "transpose_b": attr(node, "transpose_b", False),
            "squeeze": attr(node, "squeeze_dims", [])}


# ---------------------------------------------------------------- the ops

def activate(kind: str, x: torch.Tensor, step: Step, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """A fused op's activation, named as TF names it."""
    if kind == "Relu":
        return F.relu(x)
    if kind == "Relu6":
        return F.relu6(x)
    if kind == "Prelu":
        alpha = channel_view(alpha) if x.dim() == 4 else alpha
        return torch.where(x > 0, x, x * alpha)
    if kind == "LeakyRelu":
        return F.leaky_relu(x, step.settings["alpha"])
    if kind in ("Sigmoid", "Tanh", "Elu"):
        return getattr(torch, kind.lower())(x) if kind != "Elu" else F.elu(x)
    raise TfjsGraphError(f"node {step.name}: fused activation {kind} is not supported")


def fused(step: Step, y: torch.Tensor, extra: list) -> torch.Tensor:
    """The ops TF fused after a convolution or a matmul: BiasAdd, then one activation."""
    ops = list(step.settings["fused"])
    if ops and ops[0] == "BiasAdd":
        bias = extra.pop(0)
        y = y + (bias.view(1, -1, 1, 1) if y.dim() == 4 else bias)
        ops = ops[1:]
    if len(ops) > 1 or (ops and ops[0] in ("FusedBatchNorm", "BiasAdd")):
        raise TfjsGraphError(f"node {step.name} ({step.op}): fused ops {step.settings['fused']} are not supported")
    return activate(ops[0], y, step, extra[0] if extra else None) if ops else y


def conv(step: Step, args: list) -> torch.Tensor:
    """Conv2D, DepthwiseConv2dNative and their fused forms (kernels already OIHW or (C*M)1HW)."""
    x, kernel = args[0], args[1]
    groups = x.shape[1] if "Depthwise" in step.op else 1
    x, padding = padded(x, spatial_pads(step, x, tuple(kernel.shape[2:])))
    y = F.conv2d(x, kernel, None, step.settings["strides"], padding, step.settings["dilations"], groups)
    return fused(step, y, list(args[2:])) if step.op.startswith(("_Fused", "Fused")) else y


def matmul(step: Step, args: list) -> torch.Tensor:
    """MatMul and _FusedMatMul on 2-D tensors."""
    a, b = args[0], args[1]
    a = a.t() if step.settings["transpose_a"] else a
    b = b.t() if step.settings["transpose_b"] else b
    y = a @ b
    return fused(step, y, list(args[2:])) if step.op == "_FusedMatMul" else y


def pool(step: Step, args: list) -> torch.Tensor:
    """MaxPool and AvgPool; TF's SAME average counts only the pixels inside the image."""
    x, kernel, stride = args[0], step.settings["ksize"], step.settings["strides"]
    pads = spatial_pads(step, x, kernel)
    if step.op == "MaxPool":
        x, padding = padded(x, pads, value=-math.inf)
        return F.max_pool2d(x, kernel, stride, padding) if padding else F.max_pool2d(x, kernel, stride)
    summed = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pads), kernel, stride, divisor_override=1)
    return summed / counts


def axes(step: Step, x: torch.Tensor, wanted) -> list[int]:
    """NHWC axes (negative ones too) as this module's axes of `x`."""
    wanted = [wanted] if isinstance(wanted, int) else list(wanted)
    rank = x.dim()
    return [NHWC_TO_NCHW[a % rank] if rank == 4 else a % rank for a in wanted]


def mean(step: Step, args: list) -> torch.Tensor:
    """Mean over NHWC axes (a global pooling: [1, 2])."""
    x = args[0]
    return x.mean(dim=axes(step, x, args[1]), keepdim=step.settings["keep_dims"])


def reshape(step: Step, args: list) -> torch.Tensor:
    """Reshape as NHWC would: a 4-D tensor goes back to NHWC first, a 4-D result comes to NCHW."""
    x = args[0].permute(0, 2, 3, 1) if args[0].dim() == 4 else args[0]
    y = x.reshape([int(s) for s in args[1]])
    return y.permute(0, 3, 1, 2) if y.dim() == 4 else y


def pad(step: Step, args: list) -> torch.Tensor:
    """Pad with zeros (the paddings are NHWC (before, after) pairs)."""
    x, pairs = args[0], [[int(v) for v in p] for p in np.asarray(args[1]).reshape(-1, 2)]
    order = [pairs[i] for i in ((0, 3, 1, 2) if x.dim() == 4 else range(x.dim()))]
    return F.pad(x, [v for p in reversed(order) for v in p])


def softmax(step: Step, args: list) -> torch.Tensor:
    """Softmax over the last NHWC axis (channels)."""
    return F.softmax(args[0], dim=axes(step, args[0], -1)[0])


def squeeze(step: Step, args: list) -> torch.Tensor:
    """Squeeze the NHWC axes squeeze_dims names, or every axis of size 1."""
    x = args[0]
    dims = axes(step, x, step.settings["squeeze"]) if step.settings["squeeze"] else \
        [d for d in range(x.dim()) if x.shape[d] == 1]
    for d in sorted(dims, reverse=True):
        x = x.squeeze(d)
    return x


def elementwise(fn: Callable) -> Callable[[Step, list], torch.Tensor]:
    """A binary op of TF's broadcasting, its constants turned to NCHW where they meet a 4-D tensor."""
    return lambda step, args: fn(*as_nchw_operands(step, args))


def unary(fn: Callable) -> Callable[[Step, list], torch.Tensor]:
    """An op of one tensor, the same in either layout."""
    return lambda step, args: fn(args[0])


OPS: dict[str, Callable[[Step, list], torch.Tensor]] = {
    "Conv2D": conv, "DepthwiseConv2dNative": conv, "_FusedConv2D": conv, "FusedDepthwiseConv2dNative": conv,
    "MatMul": matmul, "_FusedMatMul": matmul, "MaxPool": pool, "AvgPool": pool,
    "Add": elementwise(torch.add), "AddV2": elementwise(torch.add), "Sub": elementwise(torch.sub),
    "Mul": elementwise(torch.mul), "RealDiv": elementwise(torch.div),
    "Minimum": elementwise(torch.minimum), "Maximum": elementwise(torch.maximum),
    "BiasAdd": lambda step, args: args[0] + (args[1].view(1, -1, 1, 1) if args[0].dim() == 4 else args[1]),
    "Prelu": lambda step, args: activate("Prelu", args[0], step, args[1]),
    "Relu": unary(F.relu), "Relu6": unary(F.relu6), "Sigmoid": unary(torch.sigmoid), "Tanh": unary(torch.tanh),
    "Identity": unary(lambda x: x), "Softmax": softmax, "Mean": mean, "Reshape": reshape, "Pad": pad,
    "Squeeze": squeeze,
}
KERNEL_OPS = {"Conv2D": "conv", "_FusedConv2D": "conv", "DepthwiseConv2dNative": "depthwise",
              "FusedDepthwiseConv2dNative": "depthwise"}


# ---------------------------------------------------------------- the graph

def input_name(ref: str, node: str) -> str | None:
    """The node an input reference names ('name', 'name:0'); None for a control input ('^name')."""
    if ref.startswith("^"):
        return None
    name, _, index = ref.partition(":")
    if index not in ("", "0"):
        raise TfjsGraphError(f"node {node} reads output {index} of {name}: only single-output ops are supported")
    return name


def ancestors_in_order(nodes: dict[str, dict], output: str) -> list[str]:
    """The nodes `output` depends on, itself last, each after its inputs."""
    if output not in nodes:
        raise TfjsGraphError(f"the graph has no node {output!r} to output")
    order, done, stack = [], set(), [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if name in done:
            continue
        if expanded:
            done.add(name)
            order.append(name)
            continue
        stack.append((name, True))
        for ref in nodes[name].get("input", []):
            dep = input_name(ref, name)
            if dep is not None and dep not in nodes:
                raise TfjsGraphError(f"node {name} reads {dep}, which the graph does not have")
            if dep is not None and dep not in done:
                stack.append((dep, False))
    return order


def const_roles(nodes: dict[str, dict], order: list[str]) -> dict[str, str]:
    """What each constant is to the ops reading it: a 'conv' or 'depthwise' kernel (stored as PyTorch
    wants it), a 'scale' (read by Mul: ones for a random start) or 'other'."""
    roles: dict[str, str] = {}
    for name in order:
        node = nodes[name]
        refs = [input_name(r, name) for r in node.get("input", [])]
        for i, dep in enumerate(r for r in refs if r is not None):
            if nodes[dep]["op"] != "Const":
                continue
            role = KERNEL_OPS.get(node["op"]) if i == 1 else None
            role = role or ("scale" if node["op"] == "Mul" else "other")
            old = roles.get(dep)
            if old and old != role and {old, role} & {"conv", "depthwise"}:
                raise TfjsGraphError(f"constant {dep} is a kernel of one op and read otherwise by {name}")
            roles[dep] = "scale" if "scale" in (old, role) else role
    return roles


def torch_const(value: np.ndarray, role: str) -> torch.Tensor:
    """A constant as the module holds it: kernels HWIO -> OIHW, depthwise HWCM -> (C*M)1HW."""
    t = torch.tensor(value)  # a copy, rank 0 kept (np.ascontiguousarray would make it rank 1)
    if role == "conv":
        return t.permute(3, 2, 0, 1).contiguous()
    if role == "depthwise":
        h, w, c, m = t.shape
        return t.permute(2, 3, 0, 1).reshape(c * m, 1, h, w).contiguous()
    return t


class TfjsGraph(nn.Module):
    """A TF.js graph model's nodes up to `output`, run in order on (B, C, H, W) inputs. Float constants
    of rank >= 1 are Parameters (in `parts`, which `part_of(name)` picks: the levels model.freeze counts),
    scalar ones buffers, integer ones (axes, shapes) plain values. A 4-D output comes out NCHW."""

    def __init__(self, model: dict, weights: dict[str, np.ndarray], output: str,
                 part_of: Callable[[str], int] = lambda name: 0, parts: int = 1):
        super().__init__()
        nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.output = input_name(output, "output")
        order = ancestors_in_order(nodes, self.output)
        self.roles = const_roles(nodes, order)
        self.parts = nn.ModuleList(nn.Module() for _ in range(parts))
        self.where: dict[str, tuple[int, str]] = {}
        self.static: dict[str, list] = {}
        self.steps: list[Step] = []
        for name in order:
            node = nodes[name]
            if node["op"] == "Const":
                self.add_const(name, weights, part_of(name))
            elif node["op"] != "Placeholder" and node["op"] not in OPS:
                raise TfjsGraphError(f"node {name}: op {node['op']} is not supported by the TF.js reader "
                                     f"(backbones/tfjs_graph.py OPS)")
            refs = [r for r in (input_name(r, name) for r in node.get("input", [])) if r is not None]
            self.steps.append(Step(name, node["op"], refs, [nodes[r]["op"] == "Const" for r in refs],
                                   settings_of(node) if node["op"] in OPS else {}))
        if sum(s.op == "Placeholder" for s in self.steps) != 1:
            raise TfjsGraphError(f"the graph up to {self.output} must read one input (Placeholder)")
        self.free_after = self.last_uses()

    def add_const(self, name: str, weights: dict[str, np.ndarray], part: int) -> None:
        """One constant from the weights, held as a Parameter, a buffer or a plain value."""
        if name not in weights:
            raise TfjsGraphError(f"constant {name} has no values in the weights manifest")
        value = weights[name]
        if value.dtype != np.float32:
            self.static[name] = value.tolist()
            return
        key = name.replace(".", "_")
        tensor = torch_const(value, self.roles.get(name, "other"))
        if tensor.dim() == 0:
            self.parts[part].register_buffer(key, tensor)
        else:
            self.parts[part].register_parameter(key, nn.Parameter(tensor))
        self.where[name] = (part, key)

    def last_uses(self) -> list[list[str]]:
        """For each step, the values no later step reads (dropped then, to keep memory low)."""
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for ref in step.inputs:
                last[ref] = i
        free: list[list[str]] = [[] for _ in self.steps]
        for ref, i in last.items():
            if ref != self.output:
                free[i].append(ref)
        return free

    def constant(self, name: str) -> torch.Tensor | list:
        """A constant's value: its Parameter or buffer, or the plain list of an integer one."""
        if name in self.static:
            return self.static[name]
        part, key = self.where[name]
        return getattr(self.parts[part], key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output node's value for (B, C, H, W) inputs (a 4-D output NCHW)."""
        values: dict[str, object] = {}
        for step, free in zip(self.steps, self.free_after):
            if step.op == "Placeholder":
                values[step.name] = x
            elif step.op == "Const":
                values[step.name] = self.constant(step.name)
            else:
                values[step.name] = OPS[step.op](step, [values[r] for r in step.inputs])
            for ref in free:
                del values[ref]
        return values[self.output]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """A random start (model.weights=none): kernels drawn (He), scales one, the rest zero."""
        with torch.no_grad():
            for name, (part, key) in self.where.items():
                t, role = getattr(self.parts[part], key), self.roles.get(name, "other")
                if isinstance(t, nn.Parameter) and t.dim() >= 2:
                    fan_in = t[0].numel() if role in ("conv", "depthwise") else t.shape[0]
                    t.copy_(torch.randn(t.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                elif isinstance(t, nn.Parameter):
                    t.fill_(1.0 if role == "scale" else 0.0)


def read_tfjs_graph(path: str | Path, output: str, part_of: Callable[[str], int] = lambda name: 0,
                    parts: int = 1) -> TfjsGraph:
    """The TF.js graph model at `path` (model.json, its .bin shards beside it) as a PyTorch module
    computing the node `output`."""
    model = read_model_json(path)
    return TfjsGraph(model, read_weights(model, Path(path).parent), output, part_of, parts)
