"""ONNX graphs read into PyTorch by onnx2torch, then made fit to fine-tune and to export: every float weight an
`nn.Parameter` (onnx2torch keeps PReLU slopes as buffers), the modules grouped into `parts` (the levels model.freeze
counts), any batch size (a graph exported for batch 1 or 2 ends in a Reshape to that batch).

onnx2torch turns each ONNX node into a module of an fx.GraphModule; what it leaves is written here, on the ONNX graph
before it converts (`prepared`) and on the fx graph after (`read_onnx_graph`): two small rewrites no library makes.
A TensorFlow graph (tflite2onnx's) spells PReLU as relu(x) + c * (x - |x|) and keeps its slopes as [C] constants
reshaped at run time; `prepared` folds those reshapes and fuses the pattern into one PRelu (slope 2c: exact, the
factor 2 is a power of two), so both MobileFaceNets are the same Conv + PReLU network in PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn as nn

from backbones.weights import WeightsError

if TYPE_CHECKING:  # onnx and onnx2torch load when a graph is read, not when backbones are listed
    import onnx
    import torch.fx

# the constant inputs the reader makes Parameters, by op and input position, and the name each takes
PARAMETER_INPUTS = {("PRelu", 1): "slope"}


class OnnxGraphError(WeightsError):
    """An ONNX graph this reader cannot turn into a trainable PyTorch module."""


# ---------------------------------------------------------------- the ONNX graph, before onnx2torch

def users_of(graph: "onnx.GraphProto") -> dict[str, list]:
    """The nodes reading each value, by value name."""
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def fold_constant_reshapes(graph: "onnx.GraphProto") -> None:
    """Reshape nodes of an initialiser by a constant shape replaced by the reshaped initialiser."""
    from onnx import numpy_helper

    constants = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) == 2 and all(i in constants for i in node.input):
            value = numpy_helper.to_array(constants[node.input[0]])
            shape = [value.shape[i] if s == 0 else int(s)
                     for i, s in enumerate(numpy_helper.to_array(constants[node.input[1]]))]
            folded = numpy_helper.from_array(np.ascontiguousarray(value.reshape(shape)), node.output[0])
            graph.initializer.append(folded)
            constants[folded.name] = folded
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def fuse_tf_prelu(graph: "onnx.GraphProto") -> int:
    """Add(Relu(x), Mul(c, Sub(x, Abs(x)))) (TensorFlow's PReLU, c = slope / 2) rewritten as PRelu(x, 2c); the
    number rewritten."""
    from onnx import helper, numpy_helper

    constants = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users = users_of(graph)

    def made_by(value: str, op: str):
        node = producer.get(value)
        return node if node is not None and node.op_type == op and len(users.get(value, [])) == 1 else None

    replaced, dropped = {}, set()
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for relu_out, mul_out in (add.input, add.input[::-1]):
            relu, mul = made_by(relu_out, "Relu"), made_by(mul_out, "Mul")
            if relu is None or mul is None:
                continue
            slope_name = next((i for i in mul.input if i in constants), None)
            sub = made_by(next((i for i in mul.input if i != slope_name), ""), "Sub")
            x = relu.input[0]
            if slope_name is None or sub is None or sub.input[0] != x:
                continue
            absolute = made_by(sub.input[1], "Abs")
            if absolute is None or absolute.input[0] != x:
                continue
            slope = numpy_helper.to_array(constants[slope_name]) * np.float32(2)
            if slope.ndim == 4 and slope.shape[0] == 1:  # (1, C, 1, 1) as (C, 1, 1): the shape F.prelu takes
                slope = slope[0]
            graph.initializer.append(numpy_helper.from_array(slope, f"{add.output[0]}/slope"))
            replaced[id(add)] = helper.make_node("PRelu", [x, f"{add.output[0]}/slope"], [add.output[0]])
            dropped |= {id(relu), id(mul), id(sub), id(absolute)}
            break
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


def batch_free_output(graph: "onnx.GraphProto") -> None:
    """A Reshape to (batch, features) at the graph's output, its batch written as a number, made a Flatten."""
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    (source,) = (i for i in graph.input if i.name not in constants)
    batch = source.type.tensor_type.shape.dim[0].dim_value
    for i, node in enumerate(graph.node):
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) == 2 else None
        if node.output[0] in {o.name for o in graph.output} and shape is not None and shape.size == 2 \
                and shape[0] in (batch, -1):
            graph.node[i].CopyFrom(helper.make_node("Flatten", [node.input[0]], [node.output[0]], axis=1))
    for value in (source, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"


def drop_unused_initializers(graph: "onnx.GraphProto") -> None:
    """Initialisers no node reads (the slopes and shapes the rewrites replaced) removed."""
    used = set(users_of(graph))
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def prepared(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy of the onnx.ModelProto as the reader wants it: constant reshapes folded, TensorFlow's PReLU fused, the
    output free of a written batch size, unused initialisers gone, and each node named by its op and its position
    (`Conv_0`, `PRelu_1`, ...: the names of the PyTorch modules)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if len(graph.input) - len({t.name for t in graph.initializer} & {i.name for i in graph.input}) != 1:
        raise OnnxGraphError("the graph must read one input")
    fold_constant_reshapes(graph)
    fuse_tf_prelu(graph)
    batch_free_output(graph)
    drop_unused_initializers(graph)
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{i}"
    return model


# ---------------------------------------------------------------- the PyTorch module, after onnx2torch

class Parts(nn.Module):
    """The modules and constants of one model.freeze level, by the names of their ONNX nodes."""


def read_onnx_graph(model: "onnx.ModelProto", level_of: Callable[["onnx.GraphProto"], dict[str, int]],
                    parts: int) -> "torch.fx.GraphModule":
    """The onnx.ModelProto as a torch.fx.GraphModule that fine-tunes: onnx2torch's conversion of `prepared(model)`,
    each node's module in `parts[level_of(graph)[node name]]` and each PReLU slope a Parameter beside it, the other
    constants (shapes) buffers there; an OnnxGraphError names an op or a constant it cannot take."""
    import torch.fx as fx
    from onnx2torch import convert

    model = prepared(model)
    levels = level_of(model.graph)
    try:
        converted = convert(model)
    except (NotImplementedError, KeyError, ValueError) as exc:
        raise OnnxGraphError(f"onnx2torch cannot convert the graph ({exc.__class__.__name__}: {exc})") from None
    root = nn.Module()
    root.parts = nn.ModuleList(Parts() for _ in range(parts))
    graph = converted.graph
    for node in list(graph.nodes):
        if node.op == "call_module":
            part = levels[node.target]
            root.parts[part].add_module(node.target, converted.get_submodule(node.target))
            node.target = f"parts.{part}.{node.target}"
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        value = converted.get_buffer(node.target)
        if not node.users:
            graph.erase_node(node)
            continue
        user = next(iter(node.users))
        _, part, name = user.target.split(".")
        op, position = name.rsplit("_", 1)[0], user.args.index(node)
        role = PARAMETER_INPUTS.get((op, position))
        if value.is_floating_point() and role is None:
            raise OnnxGraphError(f"node {name} reads a float constant as input {position}: only "
                                 f"{', '.join(f'{o} input {p}' for o, p in PARAMETER_INPUTS)} can be a weight")
        key = f"{name}_{role or f'input{position}'}"
        if role:
            root.parts[int(part)].register_parameter(key, nn.Parameter(value.detach().clone()))
        else:
            root.parts[int(part)].register_buffer(key, value.detach().clone())
        node.target = f"parts.{part}.{key}"
    module = fx.GraphModule(root, graph, class_name="OnnxGraph")
    module.parts = root.parts  # the ModuleList itself (GraphModule copied its members into plain Modules)
    module.graph.lint()
    return module


def reset_parameters(module: nn.Module) -> None:
    """A random start (model.weights=none): each layer's own initialisation, PReLU slopes 0.25 (nn.PReLU's)."""
    with torch.no_grad():
        for sub in module.modules():
            if sub is not module and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        for name, parameter in module.named_parameters():
            if name.endswith("_slope"):
                parameter.fill_(0.25)
