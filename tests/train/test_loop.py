"""Training loop: accuracy on real data, determinism, exact resume, post_step contract."""
import numpy as np
import pytest
import torch
from torch import nn

from lowbit.data import Normalization
from lowbit.train.checkpoint import load_checkpoint
from lowbit.train.dataset import ImageSet
from lowbit.train.loop import evaluate, fit, resolve_device


def test_short_run_learns_fashion_mnist(fashion_small, tmp_path):
    train, val, (tx, ty) = fashion_small
    r = fit("lenet300", train, val, epochs=2, seed=0, device="cpu", out_dir=tmp_path,
            progress=False)
    acc = evaluate(r.model, tx, ty)
    assert acc >= 0.70, f"LeNet-300-100, 5k images, 2 epochs: test accuracy {acc:.3f}"
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert r.history[-1]["val_acc"] >= 0.70
    assert r.history[1]["train_loss"] < r.history[0]["train_loss"]
    assert r.history[-1]["lr"] < 1e-5  # the cosine schedule has decayed to ~0


def _states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_resume_after_kill_is_bitwise_identical(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    kw = dict(epochs=3, seed=5, device="cpu", progress=False, batch_size=64)
    ref = fit("lenet5", train, val, out_dir=tmp_path / "a", **kw)

    class Killed(Exception):
        pass

    def kill_after_first(rec):
        if rec["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        fit("lenet5", train, val, out_dir=tmp_path / "b", on_epoch_end=kill_after_first, **kw)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(1234); np.random.seed(99)   # the new process's RNGs are elsewhere
    resumed = fit("lenet5", train, val, out_dir=tmp_path / "b", resume=True, **kw)
    _states_equal(ref.model.state_dict(), resumed.model.state_dict())
    assert [h["val_acc"] for h in ref.history] == [h["val_acc"] for h in resumed.history]
    a = load_checkpoint(tmp_path / "a")
    b = load_checkpoint(tmp_path / "b")
    assert b["complete"] and b["epoch"] == 3
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    for sa, sb in zip(a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values()):
        _states_equal(sa, sb)


def test_resume_extends_a_constant_schedule(fashion_tiny, tmp_path):
    """Run 1 epoch, then resume to 2: equals an uninterrupted 2-epoch run."""
    train, val = fashion_tiny
    kw = dict(seed=0, device="cpu", progress=False, schedule="constant")
    ref = fit("lenet300", train, val, epochs=2, out_dir=tmp_path / "a", **kw)
    fit("lenet300", train, val, epochs=1, out_dir=tmp_path / "b", **kw)
    resumed = fit("lenet300", train, val, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    _states_equal(ref.model.state_dict(), resumed.model.state_dict())
    with pytest.raises(ValueError, match="schedule was planned for 1 epochs"):
        fit("lenet300", train, val, epochs=1, out_dir=tmp_path / "c", seed=0, progress=False)
        fit("lenet300", train, val, epochs=2, out_dir=tmp_path / "c", resume=True, progress=False)


def test_resume_refuses_changed_settings_and_overwrites(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    fit("lenet300", train, val, epochs=1, out_dir=tmp_path, progress=False, lr=1e-3)
    with pytest.raises(ValueError, match="config 'lr': the run was started with 0.001, got 0.01"):
        fit("lenet300", train, val, epochs=1, out_dir=tmp_path, resume=True, lr=1e-2,
            progress=False)
    with pytest.raises(ValueError, match="model: the run trains 'lenet300', got 'lenet5'"):
        fit("lenet5", train, val, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="train_size"):
        fit("lenet300", (train[0][:100], train[1][:100]), val, out_dir=tmp_path, resume=True,
            progress=False)
    with pytest.raises(FileExistsError, match="checkpoint.pt: a checkpoint is already there"):
        fit("lenet300", train, val, epochs=1, out_dir=tmp_path, progress=False)
    done = fit("lenet300", train, val, out_dir=tmp_path, resume=True, progress=False)
    assert len(done.history) == 1  # a finished run resumes to itself


def test_same_seed_same_weights_other_seed_differs(fashion_tiny):
    train, _ = fashion_tiny
    kw = dict(epochs=1, device="cpu", progress=False)
    a = fit("lenet300", train, seed=1, **kw).model.state_dict()
    b = fit("lenet300", train, seed=1, **kw).model.state_dict()
    c = fit("lenet300", train, seed=2, **kw).model.state_dict()
    _states_equal(a, b)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


class _Clipped(nn.Module):
    """A toy layer using the post_step contract: clip latent weights like a BNN layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.calls = 0

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)) * 100

    def post_step(self):
        assert not torch.is_grad_enabled()
        self.calls += 1
        self.fc.weight.clamp_(-0.01, 0.01)


def test_post_step_runs_after_every_optimizer_step(fashion_tiny):
    train, _ = fashion_tiny
    model = nn.Sequential(_Clipped())
    fit(model, train, epochs=2, batch_size=100, lr=0.1, progress=False, device="cpu")
    assert model[0].calls == 2 * 6  # ceil(512 / 100) steps per epoch
    assert model[0].fc.weight.abs().max() <= 0.01


def test_bad_inputs(fashion_tiny, tmp_path):
    (x, y), _ = fashion_tiny
    with pytest.raises(ValueError, match="train images: expected uint8"):
        fit("lenet300", (x.astype(np.float32), y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="train images labels: expected shape \\(512,\\)"):
        fit("lenet300", (x, y[:10]), epochs=1, progress=False)
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        fit("lenet300", (x, y), epochs=1, optimizer="lbfgs", progress=False)
    # a model built in Python checkpoints its weights; the checkpoint says how to rebuild it
    fit(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (x, y), epochs=1, out_dir=tmp_path,
        progress=False)
    from lowbit.train.checkpoint import load_model
    with pytest.raises(ValueError, match=r"model built in Python \(torch.nn.modules.container"
                                         r".Sequential\).*build the model again"):
        load_model(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"pass it again: fit\(model, \.\.\., resume=True\)"):
        fit(None, (x, y), epochs=1, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="normalization: expected one"):
        evaluate(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x, y)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


def test_torch_and_numpy_normalisation_are_bit_identical(fashion_tiny):
    (x, y), _ = fashion_tiny
    norm = Normalization.from_images(x)
    got = ImageSet(x, y, norm).batch(slice(0, 64))[0].numpy()
    np.testing.assert_array_equal(got, norm.apply(x[:64]))


# --- any image shape, per-channel normalisation -------------------------------------------

def _rgb_data(n=96, seed=0):
    """Random uint8 (n, 3, 16, 16) images whose channels differ, and 3-class labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
    x[:, 0] //= 2
    x[:, 2] = 255 - x[:, 2] // 4
    return x, rng.integers(0, 3, n)


def _tiny_rgb_cnn(classes: int = 3):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 14 * 14, classes))


@pytest.fixture
def tiny_rgb_registered(monkeypatch):
    from lowbit.train import registry
    registry.names()  # fill the registry first, so the fake entry is not overwritten
    monkeypatch.setitem(registry._REGISTRY, "test_tiny_rgb",
                        registry.Recipe("test_tiny_rgb", _tiny_rgb_cnn, {}, "test model"))
    return "test_tiny_rgb"


def test_fit_rgb_16x16_records_per_channel_normalization(tmp_path, tiny_rgb_registered):
    from lowbit.train.checkpoint import load_model
    train, val = _rgb_data(), _rgb_data(32, seed=1)
    torch.manual_seed(0)
    r = fit(_tiny_rgb_cnn(), train, val, epochs=1, batch_size=32, device="cpu", progress=False,
            out_dir=tmp_path, name=tiny_rgb_registered)
    want = Normalization.from_images(train[0])
    assert r.normalization == want and want.channels == 3
    assert want.mean[0] < want.mean[1] < want.mean[2]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["normalization"] == {"mean": list(want.mean), "std": list(want.std),
                                     "scale": 255.0}
    assert len(r.history) == 1 and 0 <= r.history[0]["val_acc"] <= 1
    model, meta = load_model(tmp_path)
    assert meta["normalization"] == want
    assert 0 <= evaluate(model, *val) <= 1


def test_rgb_resume_is_bitwise_identical(tmp_path, tiny_rgb_registered):
    train = _rgb_data()
    kw = dict(seed=3, device="cpu", progress=False, schedule="constant", batch_size=32)
    ref = fit(tiny_rgb_registered, train, epochs=2, out_dir=tmp_path / "a", **kw)
    fit(tiny_rgb_registered, train, epochs=1, out_dir=tmp_path / "b", **kw)
    resumed = fit(tiny_rgb_registered, train, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    _states_equal(ref.model.state_dict(), resumed.model.state_dict())
    assert resumed.normalization == ref.normalization
    gray = (train[0][:, 0], train[1])
    with pytest.raises(ValueError, match="normalization: the run was started on images with 3 "
                                         "channel\\(s\\), got 1"):
        fit(tiny_rgb_registered, gray, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)


def test_rgb_imageset_equals_numpy_apply():
    x, y = _rgb_data(40)
    norm = Normalization.from_images(x)
    data = ImageSet(x, y, norm)
    got = data.batch(torch.arange(5, 37))[0].numpy()
    assert got.shape == (32, 3, 16, 16) and got.dtype == np.float32
    np.testing.assert_array_equal(got, norm.apply(x[5:37]))
    img, label = data[3]
    np.testing.assert_array_equal(img.numpy(), norm.apply(x[3:4])[0])
    with pytest.raises(ValueError, match="train images: expected 3 channel\\(s\\) \\(as the input "
                                         "normalization has\\), got 1"):
        ImageSet(x[:, :1], y, norm, what="train images")


def test_any_shape_and_bad_shapes():
    from lowbit.train.dataset import check_arrays
    x = np.zeros((4, 2, 9, 7), np.uint8)
    assert check_arrays(x, np.arange(4))[0].shape == (4, 2, 9, 7)
    assert check_arrays(x[:, 0], np.arange(4))[0].shape == (4, 1, 9, 7)
    with pytest.raises(ValueError, match=r"images: expected shape \(N, H, W\) or \(N, C, H, W\)"):
        check_arrays(np.zeros((4, 9), np.uint8), np.arange(4))
    with pytest.raises(ValueError, match="images: expected shape"):
        check_arrays(np.zeros((4, 0, 9, 7), np.uint8), np.arange(4))
    with pytest.raises(ValueError, match="labels: expected integers, got dtype float64"):
        check_arrays(x, np.zeros(4))
    with pytest.raises(ValueError, match="labels: expected shape \\(4,\\), got \\(4, 1\\)"):
        check_arrays(x, np.zeros((4, 1), int))
    with pytest.raises(ValueError, match=r"validation images: expected \(C, H, W\) = \(3, 16, 16"):
        fit(_tiny_rgb_cnn(), _rgb_data(8), (np.zeros((2, 3, 8, 8), np.uint8), np.zeros(2, int)),
            epochs=1, progress=False)
