"""lowbit-run (csrc/runner: the model file read in C++, the native executor, no Python) against
the Python runtime: every recipe of tests/runtime/test_export.py exported, run by both, logits
bit for bit (the same executor code and plan) and predictions equal; uint8 .npy, raw bytes and
normalised float32 inputs; every corruption of a file refused by both loaders with a message;
Deep-Compression files refused clearly by the runner.

The runner is built once per session with CMake alone (-DLOWBIT_RUNNER=ON -DLOWBIT_PYTHON=OFF)
into build/runner-test; $LOWBIT_RUN names a prebuilt binary instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit import codec
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import build_graph, export_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_export import CASES, NORM, randomize_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


def _cmake() -> str | None:
    here = Path(sys.executable).parent / "cmake"
    return str(here) if here.exists() else shutil.which("cmake")


@pytest.fixture(scope="session")
def runner() -> str:
    if os.environ.get("LOWBIT_RUN"):
        return os.environ["LOWBIT_RUN"]
    if not Path("/usr/include/nlohmann/json.hpp").exists():
        pytest.skip("lowbit-run needs nlohmann-json3-dev")
    cmake = _cmake()
    if cmake is None:
        pytest.skip("no cmake")
    build = ROOT / "build" / "runner-test"
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2")
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(build), "-DLOWBIT_RUNNER=ON", "-DLOWBIT_PYTHON=OFF",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, env=env)
    r = subprocess.run([cmake, "--build", str(build), "--target", "lowbit-run"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return str(build / "lowbit-run")


def run(runner, model, inp, *args, out=None):
    cmd = [runner, str(model), str(inp), "--quiet", *args]
    if out is not None:
        cmd += ["--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 1, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_runner_equals_python_runtime(k, runner, images, tmp_path):
    name, kwargs = CASES[k]
    torch.manual_seed(k)
    model = build_model(name, **kwargs)
    randomize_bn(model, k)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    np.save(tmp_path / "x.npy", images)
    rt = Runtime(path)
    ref = rt.logits(images)
    r = run(runner, path, tmp_path / "x.npy", out=tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "y.npy").reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    if rt.executor == "native":          # the same executor and plan: the same bits
        assert np.array_equal(got, ref)
    # stdout: "<index> <class> <logits>" per image
    r = subprocess.run([runner, str(path), str(tmp_path / "x.npy")], capture_output=True, text=True)
    preds = [int(line.split()[1]) for line in r.stdout.splitlines()]
    assert preds == list(ref.argmax(1))


def test_raw_and_normalized_inputs(runner, images, tmp_path):
    torch.manual_seed(0)
    model = build_model("bnn-lenet5")
    randomize_bn(model)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    rt = Runtime(path)
    ref = rt.logits(images)
    images.tofile(tmp_path / "x.raw")
    r = run(runner, path, tmp_path / "x.raw", out=tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), ref)
    assert "ms/image" in r.stderr                        # timing on stderr
    xf = ((images / 255.0 - NORM["mean"]) / NORM["std"]).astype(np.float32)
    np.save(tmp_path / "xf.npy", xf)
    r = run(runner, path, tmp_path / "xf.npy", "--normalized", out=tmp_path / "yf.npy")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "yf.npy"), rt.logits(xf, normalized=True))
    r = run(runner, path, tmp_path / "xf.npy")               # float pixels without the flag
    assert r.returncode == 2 and "normalized" in r.stderr
    xf[3, 0, 1, 1] = np.nan
    np.save(tmp_path / "xn.npy", xf)
    r = run(runner, path, tmp_path / "xn.npy", "--normalized")
    assert r.returncode == 2 and "NaN or inf" in r.stderr
    (tmp_path / "short.raw").write_bytes(bytes(100))
    r = run(runner, path, tmp_path / "short.raw")
    assert r.returncode == 2 and "whole number of images" in r.stderr
    for kernel in ("portable",):                       # the portable path: the same logits
        r = run(runner, path, tmp_path / "x.raw", "--kernel", kernel, out=tmp_path / "yp.npy")
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.load(tmp_path / "yp.npy"), Runtime(path, kernel=kernel).logits(images))


def _python_refuses(path) -> str | None:
    try:
        Runtime(path)
    except (ValueError, KeyError) as e:
        return str(e)
    return None


def test_corrupt_files_refused(runner, images, tmp_path):
    torch.manual_seed(0)
    model = build_model("bnn-lenet5").eval()
    good = tmp_path / "m.lbm"
    export_model(model, good, NORM)
    images.tofile(tmp_path / "x.raw")
    blob = good.read_bytes()
    rng = np.random.default_rng(1)
    positions = [0, 9, 20, 40, 61, 64, 70, 100, len(blob) // 2, len(blob) - 1]
    positions += list(rng.integers(0, len(blob), 20))
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        p = tmp_path / f"bad{pos}.lbm"
        p.write_bytes(bytes(bad))
        r = run(runner, p, tmp_path / "x.raw")
        assert r.returncode == 2, (pos, r.stderr)
        assert str(p) in r.stderr and r.stderr.startswith("lowbit-run: "), (pos, r.stderr)
        assert _python_refuses(p) is not None, pos
        p.unlink()
    for cut in (10, 63, 64, len(blob) - 64, len(blob) - 1):
        p = tmp_path / f"cut{cut}.lbm"
        p.write_bytes(blob[:cut])
        r = run(runner, p, tmp_path / "x.raw")
        assert r.returncode == 2 and "truncated" in r.stderr, (cut, r.stderr)
    p = tmp_path / "trail.lbm"
    p.write_bytes(blob + b"\0")
    r = run(runner, p, tmp_path / "x.raw")
    assert r.returncode == 2 and "trailing bytes" in r.stderr
    p = tmp_path / "foreign.lbm"
    p.write_bytes(b"\x7fELF" + blob[4:])
    r = run(runner, p, tmp_path / "x.raw")
    assert r.returncode == 2 and "not a lowbit model file" in r.stderr


def test_deep_compression_refused_clearly(runner, images, tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet300").eval()
    graph, tensors = build_graph(model, NORM)
    tensors = {k: (codec.model.dc(t.data) if t.data.ndim == 2 else t) for k, t in tensors.items()}
    codec.save(tmp_path / "dc.lbm", graph, tensors)
    images.tofile(tmp_path / "x.raw")
    r = run(runner, tmp_path / "dc.lbm", tmp_path / "x.raw")
    assert r.returncode == 2
    assert "Deep-Compression ('dc') tensors are not supported by lowbit-run" in r.stderr
