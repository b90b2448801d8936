"""Baselines for ``lowbit bench model``: the same architecture as a float model, run by
PyTorch fp32 eager, ONNX Runtime fp32 and ONNX Runtime int8 (static quantization, QDQ format).

Every baseline is a :class:`Runner` with one interface::

    runner.name                      # "torch-fp32", "ort-fp32", "ort-int8"
    runner.run(x) -> logits          # x: float32 (N, 1, 28, 28) normalised images -> (N, classes)
    runner.threads, runner.info      # info: file/weight bytes, paths, quantization settings

The float model comes from any registry model: :func:`float_twin` turns a quantized recipe
into its float twin -- every ``QuantConv2d`` / ``QuantLinear`` becomes ``nn.Conv2d`` /
``nn.Linear`` of the same shape (latent float weights copied, quantizer scales dropped), and
each binarizing input quantizer / standalone sign becomes ``nn.Hardtanh`` (BNN's float
activation: same tensor traffic, cheap elementwise); DoReFa's clip becomes ``Hardtanh(0, 1)``;
the 8-bit pixel quantizer of bit-plane first layers and gradient quantizers become identity.
BatchNorm, pooling and the op order stay as they are.  For *speed* the values do not matter;
the twin's accuracy is not the quantized model's (train a float model for that).

ONNX: :func:`export_onnx` (the TorchScript exporter, opset 17, dynamic batch axis).  int8:
:func:`quantize_int8` calls ``onnxruntime.quantization.quantize_static`` on the pre-processed
(shape-inferred, BatchNorm-folded) fp32 model with a :class:`ImageReader` over a calibration
subset of real images, ``QuantFormat.QDQ``, per-channel int8 weights, uint8 activations,
MinMax calibration.  ``reduce_range`` (7-bit weights) is on by default on CPUs without VNNI:
there ORT's u8s8 kernels use ``vpmaddubsw``, whose int16 pair sums can saturate with 8-bit
weights (ORT's quantization docs); with VNNI it is off.

torch and onnxruntime are imported lazily, inside functions: this module is importable anywhere.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["Runner", "float_twin", "torch_runner", "export_onnx", "ort_runner", "quantize_int8",
           "ImageReader", "calibration_images", "has_vnni", "make_baselines", "onnx_weight_bytes"]


@dataclass
class Runner:
    """One system under test: ``run(x)`` maps a float32 batch to logits (numpy)."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    threads: int = 1
    info: dict[str, Any] = field(default_factory=dict)


# -- float twin ---------------------------------------------------------------------------------

def _replacement(mod, nn, Q, layers):
    """The float module that stands for ``mod`` in the twin, or None to keep (and recurse)."""
    if isinstance(mod, layers.QuantConv2d):
        conv = nn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                         mod.padding, mod.dilation, mod.groups, mod.bias is not None)
        conv.weight.data.copy_(mod.weight.detach().contiguous())
        if mod.bias is not None:
            conv.bias.data.copy_(mod.bias.detach())
        act = _activation(mod.input_quantizer, nn, Q)
        return conv if act is None else nn.Sequential(act, conv)
    if isinstance(mod, layers.QuantLinear):
        lin = nn.Linear(mod.in_features, mod.out_features, mod.bias is not None)
        lin.weight.data.copy_(mod.weight.detach())
        if mod.bias is not None:
            lin.bias.data.copy_(mod.bias.detach())
        act = _activation(mod.input_quantizer, nn, Q)
        return lin if act is None else nn.Sequential(act, lin)
    if isinstance(mod, Q.Quantizer):
        act = _activation(mod, nn, Q)
        return nn.Identity() if act is None else act
    return None


def _activation(q, nn, Q):
    """Float stand-in for an input quantizer: Hardtanh for signs, Hardtanh(0,1) for DoReFa's
    clip, None (identity) for float inputs, the 8-bit pixel and gradient quantizers."""
    if q is None or isinstance(q, (Q.Uint8Input, Q.DorefaGrad)):
        return None
    if isinstance(q, Q.DorefaActivation):
        return nn.Hardtanh(0.0, 1.0)
    if q.bits == 1:
        return nn.Hardtanh()
    return None


def float_twin(model):
    """A float32 copy of ``model`` with every quantized layer and quantizer replaced (module
    docstring); eval mode.  A model without quantized layers is returned as an eval-mode copy."""
    from torch import nn

    from lowbit.train import layers
    from lowbit.train import quantizers as Q

    twin = copy.deepcopy(model).float().eval()

    def walk(parent):
        for name, child in list(parent.named_children()):
            rep = _replacement(child, nn, Q, layers)
            if rep is None:
                walk(child)
            else:
                setattr(parent, name, rep)
    rep = _replacement(twin, nn, Q, layers)
    if rep is not None:  # the model itself is a single quantized layer
        return rep.eval()
    walk(twin)
    return twin.eval()


# -- PyTorch ------------------------------------------------------------------------------------

def torch_runner(model, threads: int = 1, name: str = "torch-fp32") -> Runner:
    """PyTorch fp32 eager, ``torch.inference_mode``; sets torch's thread count before each call
    (torch's pool is global; ORT sessions have their own)."""
    import torch
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
            # a multi-output model (the detector's three maps): all are computed, the first
            # is returned, as ORT's run and the lowbit runner's logits do
            return (out[0] if isinstance(out, (tuple, list)) else out).numpy()
    wb = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return Runner(name, run, threads, {"weight_bytes": int(wb), "torch": torch.__version__})


# -- ONNX ---------------------------------------------------------------------------------------

def export_onnx(model, path: str | os.PathLike, input_shape=(1, 1, 28, 28), opset: int = 17) -> Path:
    """fp32 ONNX file of ``model`` (eval mode) with a dynamic batch axis; returns the path.
    A model with several outputs (a tuple, e.g. the detector's heatmap / size / offset) gets
    the outputs ``logits``, ``output1``, ``output2``, ... ."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.zeros(input_shape, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        y = model(x)
        names = ["logits"] + [f"output{i}" for i in range(1, len(y))] \
            if isinstance(y, (tuple, list)) else ["logits"]
        # the TorchScript exporter (dynamo=False) is deprecated in torch >= 2.9 but exact and
        # fast for these plain Sequential models; the dynamo exporter is not needed here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=opset, dynamo=False)
    return path


def onnx_weight_bytes(path: str | os.PathLike) -> int:
    """Bytes of the initializers (weights, scales, zero points) of an ONNX file."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer))


def ort_runner(path: str | os.PathLike, threads: int = 1, name: str = "ort-fp32") -> Runner:
    """ONNX Runtime CPU session: ``intra_op_num_threads = threads``, inter-op 1, sequential
    execution, all graph optimizations."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {inp: x})[0]
    return Runner(name, run, threads, {"file": str(path), "file_bytes": os.path.getsize(path),
                                       "weight_bytes": onnx_weight_bytes(path),
                                       "onnxruntime": ort.__version__})


# -- int8 static quantization -------------------------------------------------------------------

def calibration_images(n: int = 64, root=None, seed: int = 0, normalization=None) -> np.ndarray:
    """``n`` training images of Fashion-MNIST (a fixed random subset), normalised float32
    ``(n, 1, 28, 28)``; ``normalization`` defaults to the one measured on the training set."""
    from lowbit.data import fashion
    from lowbit.data.normalization import Normalization
    images, _ = fashion.load("train", root)
    norm = normalization or Normalization.from_images(images)
    idx = np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False)
    return norm.apply(images[np.sort(idx)])


class ImageReader:
    """``CalibrationDataReader`` over float32 images, ``batch`` at a time."""

    def __init__(self, images: np.ndarray, input_name: str = "input", batch: int = 16):
        self.images, self.input_name, self.batch = np.asarray(images, np.float32), input_name, batch
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.images):
            return None
        x = self.images[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {self.input_name: x}

    def rewind(self):
        self.pos = 0


def has_vnni() -> bool:
    """True when the CPU has AVX512-VNNI or AVX-VNNI (x86 int8 dot-product instructions)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: np.ndarray,
                  per_channel: bool = True, reduce_range: bool | None = None) -> Path:
    """Static int8 QDQ model of ``fp32_path`` calibrated on ``images`` (module docstring)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()
    if reduce_range is None:
        reduce_range = not has_vnni()
    src = fp32_path
    # ORT's shape inference and calibrator write scratch files (sym_shape_infer_temp.onnx,
    # *.data) into the working directory: run them inside the temporary one
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        try:  # shape inference + ORT graph optimisation (folds BatchNorm into conv / gemm)
            from onnxruntime.quantization.shape_inference import quant_pre_process
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32_path), str(pre))
            src = pre
        except Exception:  # noqa: BLE001 -- pre-processing is an optimisation only
            src = fp32_path
        import onnx
        # BatchNorm that ORT could not fold (BN after a pool) stays float: per-channel weight
        # quantization does not apply to its rank-1 scale.  Resize (nearest upsampling) and
        # Constant stay float too: otherwise Resize's `scales` input (1, 1, 2, 2) is quantized
        # like an activation, 1 comes back as 0.996 and the output loses a channel (a
        # detector's FPN head got 95 of 96 channels).
        ops = sorted({n.op_type for n in onnx.load(str(src)).graph.node}
                     - {"BatchNormalization", "Resize", "Constant"})
        quantize_static(str(src), str(out_path), ImageReader(images), op_types_to_quantize=ops,
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax)
    return out_path


# -- all three ----------------------------------------------------------------------------------

def make_baselines(model, workdir: str | os.PathLike, calib: np.ndarray | None,
                   threads: int = 1, systems=("torch-fp32", "ort-fp32", "ort-int8"),
                   reduce_range: bool | None = None, input_shape=None) -> list[Runner]:
    """Runners for the float twin of ``model`` (ONNX files written to ``workdir``).  ``calib``:
    normalised float32 calibration images (needed for ort-int8); ``input_shape`` (C, H, W) of
    the ONNX export (default: the calibration images', else 1x28x28)."""
    twin = float_twin(model)
    workdir = Path(workdir)
    out: list[Runner] = []
    fp32 = workdir / "model_fp32.onnx"
    if input_shape is None:
        input_shape = calib.shape[1:] if calib is not None else (1, 28, 28)
    if ("ort-fp32" in systems or "ort-int8" in systems) and not fp32.exists():
        export_onnx(twin, fp32, (1,) + tuple(input_shape))
    for s in systems:
        if s == "torch-fp32":
            out.append(torch_runner(twin, threads))
        elif s == "ort-fp32":
            out.append(ort_runner(fp32, threads, "ort-fp32"))
        elif s == "ort-int8":
            if calib is None:
                raise ValueError("ort-int8 needs calibration images")
            q = workdir / "model_int8_qdq.onnx"
            if not q.exists():
                rr = (not has_vnni()) if reduce_range is None else reduce_range
                quantize_int8(fp32, q, calib, reduce_range=rr)
            r = ort_runner(q, threads, "ort-int8")
            r.info.update(reduce_range=(not has_vnni()) if reduce_range is None else reduce_range,
                          calibration_images=int(len(calib)), format="QDQ", per_channel=True)
            out.append(r)
        else:
            raise ValueError(f"unknown baseline {s!r}")
    return out
