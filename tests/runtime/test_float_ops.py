"""numpy float ops and the graph executor against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.runtime import float_ops as ops


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (2, 0))])
def test_conv2d_matches_torch(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                   stride=stride, padding=padding).numpy()
    got = ops.conv2d(x, w, b, stride, padding)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_pool_dense_relu_match_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    ref = F.max_pool2d(torch.from_numpy(x), 2).numpy()
    np.testing.assert_array_equal(ops.maxpool2d(x, 2), ref)
    ref = F.max_pool2d(torch.from_numpy(x), 3, 2).numpy()
    np.testing.assert_array_equal(ops.maxpool2d(x, 3, 2), ref)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((4, 7)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(ops.dense(a, w, b), F.linear(*map(torch.from_numpy, (a, w, b))),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ops.relu(a), np.maximum(a, 0))


def test_graph_forward_matches_lenet5_in_torch():
    from lowbit.train.export import build_graph
    from lowbit.train.models import lenet5
    torch.manual_seed(0)
    model = lenet5().eval()
    graph = build_graph(model, None, (1, 28, 28))[0]
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    got = ops.forward(graph, params.__getitem__, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n,h,w,c,o,k,s,p", [
    (1, 28, 28, 1, 20, 5, 1, 0),     # LeNet conv1, one strided window copy
    (64, 28, 28, 1, 8, 5, 1, 0),     # c = 1 at a large batch: one copy per tap
    (3, 12, 12, 20, 50, 5, 1, 0),
    (2, 9, 11, 3, 7, 3, 2, 1),       # stride 2, padding, odd sizes
    (2, 7, 7, 65, 4, 3, 1, 1),
    (50, 10, 10, 1, 4, 3, 2, 1),     # c = 1, large batch, stride + padding
])
def test_runtime_conv2d_float_matches_reference(n, h, w, c, o, k, s, p):
    """runtime.ops.conv2d_float (NHWC im2col, both gather paths) == float_ops.conv2d, also
    on an NCHW view of NHWC memory and with a non-zero pad value."""
    from lowbit.runtime.float_ops import conv2d_float, conv_matrix
    rng = np.random.default_rng(n * 1000 + c)
    x = rng.normal(size=(n, c, h, w)).astype(np.float32)
    wt = rng.normal(size=(o, c, k, k)).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32)
    want = ops.conv2d(x, wt, b, s, p)
    got = conv2d_float(x, conv_matrix(wt), (k, k), b, (s, s), (p, p))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    x_nhwc_view = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(
        conv2d_float(x_nhwc_view, conv_matrix(wt), (k, k), b, (s, s), (p, p)), got)
    if p:
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-1.0)
        np.testing.assert_allclose(
            conv2d_float(x, conv_matrix(wt), (k, k), b, (s, s), (p, p), pad_value=-1.0),
            ops.conv2d(xp, wt, b, s, 0), rtol=1e-5, atol=1e-4)


def test_runtime_maxpool_keeps_layout_and_values():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)
    for k, s in [(2, 2), (3, 2), (2, 1)]:
        got = ops.maxpool2d(x, k, s)
        oh, ow = (9 - k) // s + 1, (8 - k) // s + 1
        want = np.array([[[[x[a, b, i * s:i * s + k, j * s:j * s + k].max() for j in range(ow)]
                           for i in range(oh)] for b in range(3)] for a in range(2)])
        np.testing.assert_array_equal(got, want)


def test_input_tables_equal_the_data_package():
    """The runtime's normalisation tables are lowbit.data.Normalization's, bit for bit."""
    from lowbit.data import Normalization
    from lowbit.runtime.float_ops import input_tables
    for d, c in [({"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}, 1),
                 ({"mean": 0.2860406, "std": 0.3530242}, 3),
                 ({"mean": [0.2, 0.15, 0.1], "std": [0.3, 0.25, 0.2], "scale": 255.0}, 3),
                 ({"mean": [0.2, 0.15, 0.1], "std": 0.5}, 3),
                 ({"mean": 0.5, "std": [0.3, 0.25, 0.2]}, 3),
                 ({"mean": 10.0, "std": 7.0, "scale": 1.0}, 1)]:
        n = Normalization.from_dict(d)
        want = n.tables() if n.channels > 1 else n.table()[None]
        np.testing.assert_array_equal(input_tables(d, c), np.broadcast_to(want, (c, 256)))
