"""Baselines of ``lowbit bench model``: float twin, ONNX export = PyTorch, ORT int8 static QDQ."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from lowbit.bench import baselines as B  # noqa: E402
from lowbit.train import registry  # noqa: E402
from lowbit.train.layers import QuantMixin  # noqa: E402
from lowbit.train.quantizers import Quantizer  # noqa: E402


def _images(n, seed=0):
    """Real Fashion-MNIST test images when present, else smooth random blobs (normalised)."""
    try:
        from lowbit.data import fashion
        from lowbit.data.normalization import Normalization
        x, _ = fashion.load("test")
        return Normalization(0.286, 0.353).apply(x[seed * n:(seed + 1) * n])
    except Exception:  # noqa: BLE001 -- the data set is optional for the tests
        rng = np.random.default_rng(seed)
        img = rng.random((n, 1, 7, 7)).repeat(4, 2).repeat(4, 3)
        return ((img - 0.29) / 0.35).astype(np.float32)


def test_float_twin_replaces_every_quantized_layer():
    torch.manual_seed(0)
    for name in ("bnn-vgg-small", "xnor-lenet5", "dorefa-lenet5", "bwn-lenet5"):
        m = registry.build(name).eval()
        t = B.float_twin(m)
        assert not any(isinstance(x, (QuantMixin, Quantizer)) for x in t.modules()), name
        shapes = lambda mod: sorted(tuple(p.shape) for n, p in mod.named_parameters()
                                    if n.endswith("weight") and p.dim() > 1)
        assert shapes(t) == shapes(m), name
        y = t(torch.from_numpy(_images(2)))
        assert y.shape == (2, 10) and torch.isfinite(y).all()
        assert any(isinstance(x, QuantMixin) for x in m.modules())  # the original is untouched


def test_float_twin_of_a_float_model_is_the_same_function():
    torch.manual_seed(0)
    m = registry.build("lenet5").eval()
    x = torch.from_numpy(_images(4))
    with torch.no_grad():
        assert torch.equal(B.float_twin(m)(x), m(x))


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "bnn-vgg-small"])
def test_onnx_export_matches_pytorch(tmp_path, name):
    torch.manual_seed(0)
    twin = B.float_twin(registry.build(name))
    path = B.export_onnx(twin, tmp_path / "m.onnx")
    rt = B.ort_runner(path, threads=1)
    tr = B.torch_runner(twin, threads=1)
    rng = np.random.default_rng(1)
    for n in (1, 3):  # the batch axis is dynamic
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        want, got = tr.run(x), rt.run(x)
        assert got.shape == want.shape == (n, 10)
        assert np.abs(got - want).max() < 1e-4, name
    assert rt.info["file_bytes"] > 0 and 0 < rt.info["weight_bytes"] <= rt.info["file_bytes"]


def test_ort_int8_static_qdq_agrees_with_fp32(tmp_path):
    """int8 vs fp32 of the same (random-init) LeNet-5: argmax agreement on held-out images and
    a small relative logit error.  Random-init logits have near-ties, so agreement is not 100 %;
    a broken quantization (wrong scales, missing calibration) gives ~10 % and large errors."""
    torch.manual_seed(0)
    m = registry.build("lenet5")
    calib, test = _images(64, seed=0), _images(128, seed=1)
    sys = {r.name: r for r in B.make_baselines(m, tmp_path, calib, threads=1)}
    assert set(sys) == {"torch-fp32", "ort-fp32", "ort-int8"}
    q = sys["ort-int8"]
    assert q.info["format"] == "QDQ" and q.info["calibration_images"] == 64
    assert q.info["file_bytes"] < 0.4 * sys["ort-fp32"].info["file_bytes"]  # int8 weights
    import onnx
    ops = {n.op_type for n in onnx.load(q.info["file"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    f, i8 = sys["ort-fp32"].run(test), q.run(test)
    assert (f.argmax(1) == i8.argmax(1)).mean() >= 0.9
    assert np.linalg.norm(i8 - f) / np.linalg.norm(f) < 0.1


def test_ort_int8_of_a_model_with_nearest_upsampling_and_concat(tmp_path):
    """An FPN-like graph (upsample x2 + concat, as the detector's ``fpn`` head): int8 runs and
    keeps the channel count (quantizing Resize's scales used to drop a channel)."""
    from torch import nn

    class Fpn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.head = nn.Conv2d(12, 3, 1)

        def forward(self, x):
            a = torch.relu(self.a(x))
            return self.head(torch.cat([a, self.up(torch.relu(self.b(a)))], 1))

    torch.manual_seed(0)
    m = Fpn().eval()
    calib = np.random.default_rng(0).normal(size=(16, 1, 16, 16)).astype(np.float32)
    fp32 = B.export_onnx(m, tmp_path / "f.onnx", input_shape=(1, 1, 16, 16))
    q = B.quantize_int8(fp32, tmp_path / "q.onnx", calib)
    x = calib[:1]
    got = B.ort_runner(q).run(x)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 3, 16, 16)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.1
