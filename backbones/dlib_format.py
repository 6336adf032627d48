"""The project's own reader of dlib's serialization (dlib_face_recognition_resnet_model_v1.dat), and the
topology of the network it describes (backbones.dlib_resnet builds it in PyTorch).

Written by hand because no library reads dlib's format into PyTorch: dlib's own Python binding
runs the network one chip at a time without BLAS (about 10 chips/s here) and cannot be trained.
The reader follows dlib/serialize.h and dlib/dnn/{core,layers,input,loss}.h:
- an integer is a control byte (low 4 bits: N bytes, bit 0x80: negative) then N little-endian bytes;
- a float is an integer mantissa then an integer exponent (value = m * 2**e);
- a string is its length then its bytes; a bool is one ASCII byte '0' or '1';
- a tensor is int 2, then n, k, nr, nc, then n*k*nr*nc little-endian float32; an alias tensor is
  int 1 and the same four ints with no data (a view into the layer's `params`).
The file has no header: the loss layer, then every layer's version outermost first, then the input
layer, then each layer's details from the input end (each followed by its training buffers).

The topology is not in the file (tag and skip layers store nothing): it is the C++ type of dlib's
tools/python/src/face_recognition.cpp, ResNet-29: a 7x7/2 convolution, a 3x3/2 max pool, residual
levels of 32, 64, 128 and 256 filters whose down-sampling blocks take a 2x2/2 average pool as skip
path, a global average and a 128-d linear layer without bias.

Pitfalls that each give a wrong answer: strided convolutions and the pools have no padding; a
residual add of two different sizes zero-pads the smaller at the end of channels, rows and columns;
the input is (pixel - mean) / 256; the output is not normalised; batch norm is already folded into
the affine layers (scale and shift per channel, no statistics).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CHIP = 150
# (filters, down-sampling) of each residual block, from the input end.
BLOCKS = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2 \
    + [(256, True)] + [(256, False)] * 2 + [(256, True)]
# The levels a fine-tuning can freeze or train, from the input end: blocks per level after the stem.
LEVELS = ("stem", "level1", "level2", "level3", "level4", "level5", "fc")
LEVEL_BLOCKS = (3, 4, 3, 3, 1)


class DlibFormatError(ValueError):
    """A file that is not the dlib face-recognition network; the message says where it went wrong."""


class _Reader:
    """dlib's serialization primitives over a bytes buffer."""

    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = memoryview(data), 0, name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos}")

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"the file ends early (wanted {n} more bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"not an integer (control byte {control:#x})")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return special[exponent] if exponent in special else float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        return bytes(self.take(self.int())).decode("latin-1")

    def bool(self) -> bool:
        byte = bytes(self.take(1))
        if byte not in (b"0", b"1"):
            raise self.fail(f"not a bool ({byte!r})")
        return byte == b"1"

    def expect(self, *versions: str) -> str:
        version = self.string()
        if version not in versions:
            raise self.fail(f"expected {' or '.join(versions)}, found {version!r}")
        return version

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        if (version := self.int()) != 1:
            raise self.fail(f"alias tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))


def _topology() -> list[str]:
    """Every layer of the network, outermost first, as dlib's nested C++ type serialises it."""
    inner = ["con7", "affine", "relu", "max_pool"]  # from the input end
    for _, down in BLOCKS:
        block = ["tag1", f"con3/{2 if down else 1}", "affine", "relu", "con3/1", "affine"]
        inner += block + (["tag2", "skip1", "avg_pool", "add_prev", "relu"] if down else ["add_prev", "relu"])
    inner += ["avg_pool_everything", "fc"]
    return inner[::-1]


def _read_con(r: _Reader, out: dict) -> None:
    version = r.expect("con_4", "con_5", "con_6")
    params = r.tensor()
    filters, rows, cols, sy, sx, py, px = (r.int() for _ in range(7))
    weights, biases = r.alias(), r.alias()
    [r.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
    if version != "con_4":
        r.bool()  # use_bias
    if version == "con_6":
        r.bool()  # use_relu
    n_w = int(np.prod(weights))
    flat = params.reshape(-1)
    if flat.size != n_w + int(np.prod(biases)) or weights[0] != filters or (rows, cols) != weights[2:]:
        raise r.fail(f"a convolution whose parameters do not match its shape {weights}")
    out["convs"].append((flat[:n_w].reshape(weights), flat[n_w:].copy(), (sy, sx), (py, px)))


def _read_affine(r: _Reader, out: dict) -> None:
    version = r.expect("affine_", "affine_2")
    params = r.tensor().reshape(-1)
    gamma, beta = r.alias(), r.alias()
    r.int()  # mode
    if version == "affine_2":
        r.bool()  # disabled
    n = int(np.prod(gamma))
    out["affines"].append((params[:n].copy(), params[n:n + int(np.prod(beta))].copy()))


def _read_relu(r: _Reader, out: dict) -> None:
    if r.expect("relu_", "relu_2") == "relu_2":
        r.bool()


def _read_pool(r: _Reader, out: dict, everything: bool = False) -> None:
    version = r.expect("avg_pool_2") if everything else r.expect("max_pool_2", "avg_pool_2")
    rows, cols, sy, sx, py, px = (r.int() for _ in range(6))
    out["pools"].append((version[:3], (rows, cols), (sy, sx), (py, px)))


def _read_fc(r: _Reader, out: dict) -> None:
    r.expect("fc_2", "fc_3")
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias(), r.alias()
    r.int()  # bias mode
    [r.float() for _ in range(4)]
    if params.size != inputs * outputs:
        raise r.fail(f"an fc layer of {params.size} values for {inputs}x{outputs}")
    out["fc"] = params.reshape(inputs, outputs).T.copy()


# How each kind of layer in _topology() stores its details (after its version and before its state).
_DETAILS = {"con": _read_con, "affine": _read_affine, "relu": _read_relu, "max_pool": _read_pool,
            "avg_pool": _read_pool, "avg_pool_everything": lambda r, out: _read_pool(r, out, everything=True),
            "add_prev": lambda r, out: r.expect("add_prev_"), "fc": _read_fc}


def _read_layer(r: _Reader, layers: list[str], i: int, out: dict) -> None:
    """Layer i and everything below it: dlib writes a layer's version, then the layers it wraps
    (down to the input), then its own details and state, so the reading recurses inwards first."""
    kind = layers[i]
    if kind in ("tag1", "tag2", "skip1"):
        if (version := r.int()) != 1:
            raise r.fail(f"{kind} layer version {version}, expected 1")
        return _read_layer(r, layers, i + 1, out)
    version = r.int()
    details = _DETAILS["con" if kind.startswith("con") else kind]
    if i == len(layers) - 1:  # the layer on the input: add_layer<LAYER, input> versions 2-3
        r.expect("input_rgb_image_sized")
        out["mean"] = (r.float(), r.float(), r.float())
        out["size"] = (r.int(), r.int())
        details(r, out)
        r.bool(), r.bool(), r.bool()
        r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
        if version >= 3:
            r.int()  # sample expansion factor
        return
    _read_layer(r, layers, i + 1, out)
    details(r, out)
    r.bool(), r.bool(), r.bool()
    r.tensor(), r.tensor()  # x_grad, cached_output
    if version >= 2:
        r.tensor()  # params_grad


def read_dat(path: str | Path) -> dict:
    """Parse dlib_face_recognition_resnet_model_v1.dat: {'convs': [(weight, bias, stride, padding)],
    'affines': [(gamma, beta)], 'pools': [(kind, size, stride, padding)], 'fc': (128, 256) weight,
    'mean': (r, g, b), 'size': (rows, cols), 'margin', 'threshold'}, convs and affines from the input end."""
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    out: dict = {"convs": [], "affines": [], "pools": []}
    if (version := r.int()) != 1:
        raise r.fail(f"loss layer version {version}, expected 1 (is this dlib's face-recognition network?)")
    r.expect("loss_metric_2")
    out["margin"], out["threshold"] = r.float(), r.float()
    _read_layer(r, _topology(), 0, out)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the network")
    if len(out["convs"]) != 1 + 2 * len(BLOCKS) or len(out["affines"]) != 1 + 2 * len(BLOCKS):
        raise r.fail("not the ResNet-29 of dlib's face recognition")
    return out
