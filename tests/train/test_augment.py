"""Training augmentation (flip, shift) and fine-tuning from a checkpoint (init)."""
import numpy as np
import pytest
import torch

from lowbit.train.augment import Augment, parse
from lowbit.train.checkpoint import load_checkpoint
from lowbit.train.loop import fit


def test_parse_and_its_errors():
    assert parse(None) == {"flip": False, "shift": 0}
    assert parse("flip,shift=2") == {"flip": True, "shift": 2}
    assert not Augment("") and Augment("flip") and Augment("shift=1")
    for bad in ("flop", "shift", "shift=0", "shift=-1", "shift=x", "flip=1", "shift=17"):
        with pytest.raises(ValueError, match="augment: "):
            parse(bad)


def test_flip_gives_each_image_or_its_mirror():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 5, 7)
    y = Augment("flip")(x)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54                    # about half, both happen


@pytest.mark.parametrize("shape", [(32, 1, 1, 1), (32, 2, 9, 6), (32, 3, 28, 28)])
def test_shift_is_a_translation_with_the_border_pixel_filling_in(shape):
    torch.manual_seed(1)
    s = 2
    x = torch.randn(*shape)
    y = Augment(f"shift={s}")(x)
    assert y.shape == x.shape
    h, w = shape[2:]
    xp = torch.nn.functional.pad(x, (s, s, s, s), mode="replicate")
    seen = set()
    for b in range(shape[0]):          # the oracle: some offset (dy, dx) in 0..2s gives y[b]
        hits = [(dy, dx) for dy in range(2 * s + 1) for dx in range(2 * s + 1)
                if torch.equal(y[b], xp[b, :, dy:dy + h, dx:dx + w])]
        assert hits, f"image {b} is not a translation of the input"
        seen.update(hits)
    assert len(seen) > 1 or shape[2:] == (1, 1)


def test_augmented_run_resumes_exactly_and_init_starts_from_the_weights(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    kw = dict(epochs=2, seed=3, device="cpu", progress=False, batch_size=64,
              augment="flip,shift=2")
    ref = fit("lenet5", train, val, out_dir=tmp_path / "a", **kw)
    assert ref.config["augment"] == "flip,shift=2"

    class Killed(Exception):
        pass

    def kill(rec):
        raise Killed

    with pytest.raises(Killed):
        fit("lenet5", train, val, out_dir=tmp_path / "b", on_epoch_end=kill, **kw)
    torch.manual_seed(99)
    resumed = fit("lenet5", train, val, out_dir=tmp_path / "b", resume=True, **kw)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="augment"):     # a resumed run keeps its settings
        fit("lenet5", train, val, out_dir=tmp_path / "b", resume=True,
            **{**kw, "augment": "flip"})

    # init: the weights of the checkpoint, a fresh schedule; lr 0 leaves them as they were
    ck = tmp_path / "a" / "checkpoint.pt"
    tuned = fit("lenet5", train, val, epochs=1, lr=0.0, device="cpu", progress=False,
                init=ck, out_dir=tmp_path / "c")
    saved = load_checkpoint(ck)["model_state"]
    for k, v in tuned.model.state_dict().items():
        if "running" not in k and "num_batches" not in k:      # BN statistics do move
            assert torch.equal(v, saved[k]), k
    assert tuned.config["init"] == str(ck)
    assert tuned.normalization.to_dict() == ref.normalization.to_dict()
    with pytest.raises(ValueError, match="init: the checkpoint's weights do not fit"):
        fit("lenet300", train, val, epochs=1, device="cpu", progress=False, init=ck)


def test_cli_refuses_a_bad_augment_or_a_missing_init_in_one_line(tmp_path, capsys):
    from lowbit.cli import main
    assert main(["train", "--model", "lenet5", "--augment", "flop", "--out",
                 str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lowbit train: error: augment: 'flop'")
    assert main(["train", "--model", "lenet5", "--init", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "none.pt" in err[0]
