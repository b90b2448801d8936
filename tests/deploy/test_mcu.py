"""`lowbit export-c` (lowbit.cexport): the arena plan, the lowering of bnn-lenet5, refusals (pure
Python, always); the exported C compiled for the host against the Python runtime (gcc: every
binary accumulator traced and equal, predictions equal, logits to rounding); and the Cortex-M4
build under qemu-system-arm (MPS2 AN386) within 128 KiB flash / 32 KiB RAM, its outputs the
host build's bit for bit (arm-none-eabi-gcc + qemu-system-arm; skipped without them)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowbit.cexport.arena import Buffer, check, peak_live, plan
from lowbit.cexport.export import Unsupported, export_c
from lowbit.runtime.graph import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcu_tools as T  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SENTINEL = -(1 << 31)


# ---- the arena plan ------------------------------------------------------------------------

def test_arena_plan_reuses_memory_and_never_overlaps_live_buffers():
    chain = [Buffer(f"v{i}", s, i, i + 1) for i, s in enumerate([3136, 11520, 576, 100, 64, 40])]
    offsets, total = plan(chain)
    check(chain, offsets, total)
    assert total == max(a + b for a, b in zip([3136, 11520, 576, 100, 64], [11520, 576, 100, 64, 40]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        bufs = []
        for i in range(int(rng.integers(1, 25))):
            first = int(rng.integers(0, 20))
            bufs.append(Buffer(f"b{i}", int(rng.integers(0, 5000)), first,
                               first + int(rng.integers(0, 6))))
        offsets, total = plan(bufs)
        check(bufs, offsets, total)
        assert peak_live(bufs) <= total <= sum((b.size + 7) // 8 * 8 for b in bufs)
        assert all(o % 8 == 0 for o in offsets.values())


def test_arena_check_sees_an_overlap():
    a, b = Buffer("a", 100, 0, 2), Buffer("b", 100, 1, 3)
    with pytest.raises(AssertionError, match="overlap"):
        check([a, b], {"a": 0, "b": 50}, 200)


def test_input_tables_equal_the_runtime():
    from lowbit.cexport.tables import input_tables
    from lowbit.runtime.float_ops import input_tables as rt_tables
    for norm, c in [(None, 1), ({"mean": 0.286, "std": 0.353, "scale": 255.0}, 1),
                    ({"mean": [0.1, 0.2, 0.3], "std": 0.5}, 3)]:
        assert np.array_equal(input_tables(norm, c), rt_tables(norm, c))


# ---- lowering and refusals -------------------------------------------------------------------

def _model_file(name: str, kwargs: dict, seed: int, path: Path) -> Path:
    """A model file of recipe ``name`` (random init, random BatchNorm statistics with ties)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    from test_export import NORM, randomize_bn
    from lowbit.train.checkpoint import build_model
    from lowbit.train.export import export_model
    torch.manual_seed(seed)
    model = build_model(name, **kwargs)
    randomize_bn(model, seed)
    model.eval()
    export_model(model, path, NORM)
    return path


@pytest.fixture(scope="module")
def bnn_file(tmp_path_factory) -> Path:
    """bnn-lenet5 as the recipe builds it: conv2 50 channels, fc1 800 -> 500."""
    return _model_file("bnn-lenet5", {}, 2, tmp_path_factory.mktemp("bnn") / "m.lbm")


def test_bnn_lenet5_lowering(bnn_file, tmp_path):
    rep = export_c(bnn_file, tmp_path)
    steps = "\n".join(rep["steps"])
    # conv1 + pool1 + sign(bn1) in one step; conv2's pool fused; fc1 reads 800 stream bits
    assert "conv1: float conv (1, 28, 28) -> (20, 12, 12) + max pool + sign(bn1)" in steps
    assert "conv2: binary conv (20, 12, 12) -> (50, 4, 4) bits + pool" in steps
    assert "fc1: binary dense 800 -> 500 bits" in steps
    assert rep["traced"] == ["conv2", "fc1"]
    # the largest two live buffers: the float input (3136 B) and conv1's bits (20 x 144 words)
    assert rep["arena_bytes"] == 3136 + 576
    c = (tmp_path / "lowbit_model.c").read_text()
    assert "k_fc1_w[12500]" in c                # 500 rows of 25 words: 800 bits, no padding
    assert "k_conv2_w[1250]" in c               # 50 x 5 x 5 taps of one word (20 channels)
    h = (tmp_path / "lowbit_model.h").read_text()
    assert "int lowbit_predict(const uint8_t *input, float *output);" in h
    assert "#define LOWBIT_ARENA_BYTES 3712" in h
    for f in ("lowbit_mcu.h", "lowbit_mcu_binary.h"):
        assert (tmp_path / f).exists()
    assert "malloc" not in c and "printf" not in c


def test_prefix(bnn_file, tmp_path):
    export_c(bnn_file, tmp_path, prefix="fmnist")
    assert "int fmnist_predict(" in (tmp_path / "fmnist_model.h").read_text()
    with pytest.raises(ValueError, match="C identifier"):
        export_c(bnn_file, tmp_path, prefix="1bad-name")


@pytest.mark.parametrize("name,what", [("dc-mlp.lbm", "Deep Compression"),
                                       ("bnn-lenet5-bitplane.lbm", "conv1 (qconv2d): input 'uint8'")])
def test_refusals_name_the_reason(name, what, tmp_path):
    with pytest.raises(Unsupported, match=re.escape(what)):
        export_c(CORPUS / name, tmp_path)


def test_cli(bnn_file, tmp_path):
    exe = Path(sys.executable).parent / "lowbit"
    r = subprocess.run([str(exe), "export-c", str(bnn_file), "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "lowbit_predict" in r.stdout and (tmp_path / "c" / "lowbit_model.c").exists()
    r = subprocess.run([str(exe), "export-c", str(CORPUS / "dc-mlp.lbm"), "--out",
                        str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode == 2 and "Deep Compression" in r.stderr


# ---- the C on the host: against the Python runtime -------------------------------------------

def _compare(model: Path, out: Path, images: np.ndarray) -> dict:
    rep = export_c(model, out / "c")
    exe = T.host_build(out / "c", out / "host", trace=True)
    rec: dict = {}
    ref = Runtime(model, executor="python").logits(images, record=rec)
    preds, logits, traces = T.host_run(exe, images, rep["output_size"], rep["traced"])
    assert np.array_equal(preds, ref.argmax(1))
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    for layer in rep["traced"]:                 # the binary accumulators, exactly
        for n in range(len(images)):
            got = T.trace_array(traces[n][layer], rec[layer].shape[1:])
            seen = got != SENTINEL              # (conv outputs no pool window reads: not run)
            assert seen.mean() > 0.5
            assert np.array_equal(got[seen], rec[layer][n][seen]), (layer, n)
    return rep


CASES = [("bnn-lenet5", {}), ("bnn-mlp", dict(hidden=96)), ("bnn-vgg-small", dict(width=0.5)),
         ("lenet5", {}), ("lenet300", {}), ("bwn-lenet5", {}), ("twn-lenet5", {})]


@pytest.mark.skipif(shutil.which(T.HOST_CC) is None, reason="no host C compiler")
@pytest.mark.parametrize("k", range(len(CASES)), ids=[c[0] for c in CASES])
def test_host_build_equals_python_runtime(k, tmp_path):
    name, kwargs = CASES[k]
    model = _model_file(name, kwargs, k, tmp_path / "m.lbm")
    images = np.random.default_rng(k).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    _compare(model, tmp_path, images)


# ---- Cortex-M4 under qemu ----------------------------------------------------------------------

@pytest.mark.skipif(not T.have_toolchain(), reason="needs arm-none-eabi-gcc, qemu-system-arm")
def test_cortex_m4_under_qemu(bnn_file, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    rep = _compare(bnn_file, tmp_path, images)
    _, host_logits, _ = T.host_run(T.host_build(tmp_path / "c", tmp_path / "h2", trace=False),
                                   images, 10, [])
    elf = T.firmware_build(tmp_path / "c", images, tmp_path / "fw", flash_kb=128, ram_kb=32)
    r = T.qemu_run(elf, rep["output_size"])
    ref = Runtime(bnn_file, executor="python").logits(images)
    assert np.array_equal(r["preds"], ref.argmax(1))
    assert np.array_equal(r["logits"].view(np.uint32), host_logits.view(np.uint32))
    sizes = T.elf_sizes(elf)
    assert sizes["flash"] <= 128 * 1024
    assert sizes["symbols"]["lowbit_arena"] == rep["arena_bytes"]
    assert 0 < r["stack"] < 1024
    assert len(r["insns"]) == 3 and all(1e5 < n < 2e7 for n in r["insns"])
    assert len(r["steps"]) == len(rep["steps"])
