"""Image-folder reader: gray and RGB, splits, sizes, modes, broken files, dispatch by load()."""
import numpy as np
import pytest
from PIL import Image

from lowbit.data import DataError, describe, load, load_image_folder, load_with_classes
from lowbit.data.folder import is_image_folder, read_image_folder


def _save(path, arr, fmt=None):
    """``arr`` is (H, W) gray or (H, W, 3) RGB uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_tree(root, classes=("cat", "ant", "bee"), per_class=3, shape=(6, 5), rgb=False,
              seed=0, suffix=".png"):
    """Random images under root/<class>/; returns {class: [array (C, H, W), ...]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in classes:
        out[name] = []
        for i in range(per_class):
            arr = rng.integers(0, 256, shape + ((3,) if rgb else ()), dtype=np.uint8)
            _save(root / name / f"img{i}{suffix}", arr)
            out[name].append(arr.transpose(2, 0, 1) if rgb else arr[None])
    return out


@pytest.mark.parametrize("rgb", [False, True])
def test_flat_tree_gray_and_rgb(tmp_path, rgb):
    want = make_tree(tmp_path / "d", rgb=rgb)
    (tmp_path / "d" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / "cat" / ".hidden.png").write_bytes(b"junk")
    images, labels, classes = read_image_folder(tmp_path / "d")
    assert classes == ("ant", "bee", "cat")  # sorted names -> label index
    c = 3 if rgb else 1
    assert images.shape == (9, c, 6, 5) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    for k, name in enumerate(classes):
        for i in range(3):
            np.testing.assert_array_equal(images[3 * k + i], want[name][i])
    # a flat tree is whichever split is asked for, through the one entry point
    x, y = load("test", tmp_path / "d")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_train_test_splits_and_describe(tmp_path):
    root = tmp_path / "ds"
    train = make_tree(root / "train", rgb=True, per_class=2, seed=1)
    make_tree(root / "test", rgb=True, per_class=1, seed=2)
    assert is_image_folder(root)
    x, y, classes = load_with_classes("train", root)
    assert x.shape == (6, 3, 6, 5) and classes == ("ant", "bee", "cat")
    np.testing.assert_array_equal(x[0], train["ant"][0])
    tx, ty = load("test", root)
    assert tx.shape == (3, 3, 6, 5) and ty.tolist() == [0, 1, 2]
    info = describe(root)
    assert info.kind == "image-folder" and info.splits == ("train", "test")
    assert info.counts == {"train": 6, "test": 3} and info.shape == (3, 6, 5)
    assert info.classes == classes
    assert "image folder" in str(info) and "train 6" in str(info)


def test_jpeg_and_bmp(tmp_path):
    make_tree(tmp_path / "j", rgb=True, suffix=".JPG", per_class=1)
    make_tree(tmp_path / "j", classes=("cat",), rgb=True, suffix=".bmp", per_class=1, seed=3)
    x, y, classes = read_image_folder(tmp_path / "j")
    assert x.shape == (4, 3, 6, 5) and y.tolist() == [0, 1, 2, 2]


def test_mixed_sizes_are_an_error_unless_resized(tmp_path):
    make_tree(tmp_path / "d", per_class=2)
    odd = _save(tmp_path / "d" / "bee" / "img9.png", np.zeros((8, 4), np.uint8))
    with pytest.raises(DataError) as e:
        read_image_folder(tmp_path / "d")
    msg = str(e.value)
    assert msg.startswith(f"{odd}: size: expected (H, W) = (6, 5)")
    assert "got (8, 4)" in msg and "size=(H, W)" in msg
    x, _, _ = read_image_folder(tmp_path / "d", size=(4, 4))
    assert x.shape == (7, 1, 4, 4)
    x, _ = load("train", tmp_path / "d", size=(6, 5))
    assert x.shape == (7, 1, 6, 5)


def test_test_split_must_match_train_size(tmp_path):
    make_tree(tmp_path / "r" / "train", shape=(6, 5))
    make_tree(tmp_path / "r" / "test", shape=(7, 7))
    with pytest.raises(DataError, match=r"test/ant/img0.png: size: expected \(H, W\) = \(6, 5\) "
                                        r"like .*train/ant/img0.png, got \(7, 7\)"):
        load("test", tmp_path / "r")
    assert load("test", tmp_path / "r", size=(6, 5))[0].shape == (9, 1, 6, 5)


def test_classes_must_agree_between_splits(tmp_path):
    make_tree(tmp_path / "r" / "train", classes=("a", "b"))
    make_tree(tmp_path / "r" / "test", classes=("a", "c"))
    with pytest.raises(DataError, match=r"classes: train/ and test/ must have the same class "
                                        r"folders; only in train/: \['b'\], "
                                        r"only in test/: \['c'\]"):
        load("train", tmp_path / "r")


def test_missing_split(tmp_path):
    make_tree(tmp_path / "r" / "train")
    with pytest.raises(DataError, match="split 'test': no test/ folder here \\(found train/\\)"):
        load_image_folder("test", tmp_path / "r")


def test_corrupt_and_truncated_files(tmp_path):
    make_tree(tmp_path / "d")
    bad = tmp_path / "d" / "bee" / "img1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=f"{bad}: not a readable image"):
        read_image_folder(tmp_path / "d")
    make_tree(tmp_path / "e", shape=(40, 40))
    cut = tmp_path / "e" / "cat" / "img2.png"
    cut.write_bytes(cut.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{cut}: not a readable image"):
        read_image_folder(tmp_path / "e")


def test_gray_and_colour_mixed(tmp_path):
    make_tree(tmp_path / "c", rgb=True, per_class=1)
    _save(tmp_path / "c" / "cat" / "gray.png", np.full((6, 5), 7, np.uint8))
    x, _, _ = read_image_folder(tmp_path / "c")  # a gray image in a colour set becomes RGB
    assert x.shape == (4, 3, 6, 5) and (x[2] == 7).all()  # gray.png sorts first
    make_tree(tmp_path / "g", per_class=1)
    colour = _save(tmp_path / "g" / "cat" / "zz.png", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(DataError, match=f"{colour}: channels: expected a gray image like "
                                        f".*mode='RGB'"):
        read_image_folder(tmp_path / "g")
    assert read_image_folder(tmp_path / "g", mode="RGB")[0].shape == (4, 3, 6, 5)
    assert read_image_folder(tmp_path / "g", mode="L")[0].shape == (4, 1, 6, 5)


def test_sixteen_bit_and_empty(tmp_path):
    d = tmp_path / "h" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(d / "deep.png")
    with pytest.raises(DataError, match="deep.png: mode: expected 8-bit gray or colour pixels"):
        read_image_folder(tmp_path / "h")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="images: no .png/.jpg/.jpeg/.bmp files"):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="classes: expected one subfolder per class, found none"):
        read_image_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="size: expected \\(H, W\\)"):
        read_image_folder(tmp_path / "h", size=5)
