"""Weight sharing: k-means against direct numpy, centroid gradients, pruned weights stay zero."""
import numpy as np
import pytest
import torch
from torch import nn

from lowbit.train import prune, share


def test_linear_init_and_assignment_match_numpy():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(5000).astype(np.float32)
    c0 = share.init_centroids(v, 16, "linear")
    np.testing.assert_array_equal(c0, np.linspace(float(v.min()), float(v.max()), 16))
    a = share.assign(v, c0)
    direct = np.array([np.argmin([abs(float(x) - float(c)) for c in c0]) for x in v[:300]])
    np.testing.assert_array_equal(a[:300], direct)
    c, a = share.kmeans(v, 16, "linear")
    assert c.dtype == np.float32 and a.max() < 16
    np.testing.assert_array_equal(a, np.abs(v[:, None] - c[None]).argmin(1))
    # Lloyd fixed point: each centroid is the mean of its members (up to float32 rounding)
    for j in range(c.size):
        if (a == j).any():
            assert c[j] == pytest.approx(v[a == j].astype(np.float64).mean(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("init", share.INITS)
def test_inits_converge_and_linear_keeps_extremes(init):
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.standard_normal(3000) * 0.05, [0.9, -0.8]]).astype(np.float32)
    c, a = share.kmeans(v, 8, init)
    err = np.sqrt(np.mean((c[a] - v) ** 2))
    assert err < 0.05
    if init == "linear":  # the rare large weights get their own centroid
        assert np.min(np.abs(c - 0.9)) < 1e-6 and np.min(np.abs(c + 0.8)) < 1e-6


def test_kmeans_caps_k_at_distinct_values():
    c, a = share.kmeans(np.array([1.0, 1.0, 2.0], np.float32), 32)
    assert c.size == 2 and sorted(c.tolist()) == [1.0, 2.0]


def test_centroid_gradient_is_sum_of_member_gradients_and_pruned_stay_zero():
    torch.manual_seed(0)
    lin = nn.Linear(20, 7)
    prune.prune(nn.ModuleDict({"l": lin}), {"l": 0.6})
    mask = lin.weight.detach() != 0
    info = share.share(nn.ModuleDict({"l": lin}), {"l": 3})
    assert info["l"]["k"] == 8
    x = torch.randn(5, 20)
    out = lin(x)
    w = lin.weight
    w.retain_grad()
    (out ** 2).sum().backward()
    idx = lin.weight_index
    expect = torch.zeros(8).index_add_(0, idx[mask], w.grad[mask])
    torch.testing.assert_close(lin.weight_centroids.grad, expect, rtol=1e-5, atol=1e-6)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, weight_decay=0.01)
    for _ in range(3):
        opt.zero_grad()
        (lin(x) ** 2).sum().backward()
        opt.step()
    w = lin(x) is not None and lin.weight
    assert torch.all(idx[~mask] == 8) and torch.all(w[~mask] == 0)
    assert torch.all(w[mask] == lin.weight_centroids[idx[mask]])
    assert len(torch.unique(w[mask])) <= 8
    share.detach_shared(lin)
    assert isinstance(lin.weight, nn.Parameter) and torch.all(lin.weight[~mask] == 0)
    assert sorted(n for n, _ in lin.named_parameters()) == ["bias", "weight"]
