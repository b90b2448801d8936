"""numpy float ops and the graph executor against torch."""
import subprocess
import sys

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
    from lowbit.train.graph import graph_of
    from lowbit.train.models import lenet5
    torch.manual_seed(0)
    model = lenet5().eval()
    graph = graph_of(model, (1, 28, 28))
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    got = ops.forward(graph, params.__getitem__, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_runtime_float_ops_does_not_import_torch():
    code = "import sys, lowbit.runtime.float_ops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
