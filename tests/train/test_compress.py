"""The whole Deep Compression pipeline on a tiny budget, and `lowbit eval FILE` from the file."""
import json
import os

import numpy as np
import pytest
import torch

from lowbit import codec
from lowbit.data import DataError, Normalization, load


@pytest.fixture(scope="module")
def fashion():
    try:
        return load("train")
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


def test_compress_pipeline_end_to_end(tmp_path, fashion, capsys):
    from lowbit.cli import main as cli
    from lowbit.train.checkpoint import build_model, save_checkpoint
    from lowbit.train.compress import Options, run
    torch.manual_seed(0)
    model = build_model("lenet300")
    ckpt = tmp_path / "float.pt"
    save_checkpoint(ckpt, model, normalization=Normalization.from_images(fashion[0][:1000]),
                    config={"val_size": 5000, "seed": 0})
    out, rep = tmp_path / "m.lbm", tmp_path / "r.json"
    opts = Options(prune="fc1=0.9,fc2=0.9,fc3=0.5", bits="4", prune_steps=1, prune_epochs=1,
                   share_epochs=1, max_train=512, max_test=2000, huffman=True, progress=False)
    from lowbit.runtime.evaluate import file_accuracy
    report = run(str(ckpt), str(out), opts, str(rep), file_accuracy)  # checks exact decoding
    saved = json.loads(rep.read_text())
    for key in ("ratio_pruned", "ratio_pq", "ratio_pqh", "file_bytes", "fp32_bytes",
                "acc_float", "acc_compressed"):
        assert key in saved
    assert saved["file_bytes"] == os.path.getsize(out)
    assert saved["fp32_bytes"] == 4 * 266610
    assert saved["ratio_pqh"] == pytest.approx(saved["fp32_bytes"] / saved["file_bytes"])
    assert saved["ratio_pruned"] < saved["ratio_pq"] < saved["ratio_pqh"]
    rows = {r["layer"]: r for r in report["layers"]}
    assert rows["fc1"]["kept_frac"] == pytest.approx(0.1, abs=0.002)
    mf = codec.load(out)
    w = mf.tensor("fc1.weight")
    assert len(np.unique(w[w != 0])) <= 16
    # the reported accuracy is the file's own, and `lowbit eval FILE` runs from the file alone
    from lowbit.data import subset
    from lowbit.runtime.evaluate import evaluate_file
    from lowbit.runtime import Runtime
    tx, ty = subset(*load("test"), 2000, seed=0)
    assert float((Runtime(out).predict(tx) == ty).mean()) == saved["acc_compressed"]
    assert cli(["eval", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"{evaluate_file(str(out))['accuracy']:.2%}" in line and "test accuracy" in line
