"""Pruning masks: exact zeros through optimizer steps, no gradient, schedule, DSD, sensitivity."""
import numpy as np
import pytest
import torch
from torch import nn

from lowbit.train import prune


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)


def _step(model, opt, seed):
    x, y = _batch(seed)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    for m in model.modules():  # what lowbit.train.loop.fit does after every step
        if callable(getattr(m, "post_step", None)):
            m.post_step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
], ids=["adam_l2", "adamw", "sgd_momentum", "nesterov"])
def test_masks_survive_optimizer_steps(make_opt):
    torch.manual_seed(0)
    model = Net()
    opt = make_opt(model.parameters())
    for i in range(3):  # dense steps first: the optimizer now has non-zero state everywhere
        _step(model, opt, i)
    achieved = prune.prune(model, {"conv": 0.5, "fc": 0.8})
    assert achieved["conv"] == pytest.approx(0.5, abs=0.03)
    assert achieved["fc"] == pytest.approx(0.8, abs=0.01)
    masks = {n: m.clone() for n, m in prune.masks(model).items()}
    for i in range(5):
        _step(model, opt, 10 + i)
        for name, m in prune.layers(model).items():
            w = m.weight.detach()
            assert torch.all(w[~masks[name]] == 0), f"{name} revived after step {i}"
            assert torch.all(m.weight.grad[~masks[name]] == 0), f"{name} got a gradient"
            assert (w[masks[name]] != 0).float().mean() > 0.9


def test_masks_hold_inside_fit():
    from lowbit.train.loop import fit
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)
    prune.prune(model, {"1": 0.9, "3": 0.5})
    before = {n: m.clone() for n, m in prune.masks(model).items()}
    fit(model, (images, labels), epochs=2, lr=1e-2, batch_size=16, optimizer="sgd",
        momentum=0.9, weight_decay=1e-3, progress=False, device="cpu")
    for name, m in prune.layers(model).items():
        assert torch.all(m.weight[~before[name]] == 0)


def test_threshold_by_std_and_masks_only_shrink():
    torch.manual_seed(0)
    w = torch.randn(100, 100)
    keep = prune.threshold_mask(w, q=1.0)
    assert torch.equal(keep, w.abs() >= w.std())
    keep2 = prune.threshold_mask(w * keep, sparsity=0.5, mask=keep)
    assert torch.all(keep2 <= keep)
    assert int(keep2.sum()) == min(5000, int(keep.sum()))


def test_schedule_rises_to_target():
    plan = prune.schedule({"a": 0.9, "b": "1.5std"}, 3)
    sps = [p["a"] for p in plan]
    assert sps == sorted(sps) and sps[-1] == pytest.approx(0.9)
    assert [p["b"] for p in plan] == ["0.5std", "1std", "1.5std"]


def test_iterative_prune_and_dsd_and_remove():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    calls = []
    hist = prune.iterative_prune(model, {"fc": 0.9}, lambda i: (calls.append(i),
                                 _step(model, opt, i)), steps=3)
    assert calls == [0, 1, 2] and hist[-1]["fc"] == pytest.approx(0.9, abs=0.01)
    assert hist[0]["fc"] < hist[1]["fc"] < hist[2]["fc"]
    for m in prune.layers(model).values():
        prune.remove_mask(m)
    assert not prune.masks(model) and not hasattr(model.fc, "post_step")

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen = {}
    def sparse_phase():
        _step(model, opt, 0)
        seen["sparse_zeros"] = float((model.fc.weight == 0).float().mean())
    achieved = prune.dsd(model, {"fc": 0.7}, sparse_phase, lambda: _step(model, opt, 1))
    assert achieved["fc"] == pytest.approx(0.7, abs=0.01)
    assert seen["sparse_zeros"] == pytest.approx(0.7, abs=0.01)
    assert float((model.fc.weight == 0).float().mean()) < 0.1  # re-dense phase regrew them


def test_sensitivity_table_and_plot(tmp_path):
    torch.manual_seed(0)
    model = Net()
    x, y = _batch(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = lambda m: float((m(x).argmax(1) == y).float().mean())
    table = prune.sensitivity(model, acc, sparsities=(0.0, 0.5, 0.99))
    assert set(table) == {"conv", "fc"} and set(table["fc"]) == {0.0, 0.5, 0.99}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert "sparsity" in prune.format_sensitivity(table)
    prune.plot_sensitivity(table, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_gradual_pruning_rises_inside_one_run():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []

    def train():
        for i in range(12):
            _step(model, opt, i)  # calls every post_step, the schedule's included
            seen.append(float((model.fc.weight == 0).float().mean()))
    achieved = prune.gradual_prune(model, {"fc": 0.9}, train, end=10, every=2)
    assert seen[0] == 0.0 and seen[1] > 0.3 and seen[9] == pytest.approx(0.9, abs=0.01)
    assert all(a <= b + 1e-9 for a, b in zip(seen, seen[1:]))
    assert achieved["fc"] == pytest.approx(0.9, abs=0.01)
    assert not hasattr(model, "_gradual_pruning") and "_gradual_pruning" not in dict(
        model.named_modules())


def test_zero_optimizer_state_clears_pruned_moments():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _step(model, opt, 0)
    prune.prune(model, {"fc": 0.5})
    prune.zero_optimizer_state(opt, model)
    mask = model.fc.weight_mask
    for v in ("exp_avg", "exp_avg_sq"):
        assert torch.all(opt.state[model.fc.weight][v][~mask] == 0)
