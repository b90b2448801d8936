"""YOLO and COCO detection readers: good data sets in their variants, and an error naming the
file and line / field for each kind of malformed content."""
import json

import numpy as np
import pytest
from PIL import Image

from lowbit.data import DataError, DetectionSet, load_coco, load_yolo
from lowbit.data.yolo import label_path, read_data_yaml, write_data_yaml, write_labels


def _image(path, size=(32, 24), mode="RGB", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    a = (np.arange(w * h).reshape(h, w) % 251 + value).astype(np.uint8)
    Image.fromarray(np.dstack([a] * 3) if mode == "RGB" else a).convert(mode).save(path)


def _yolo(root, yaml="names:\n  0: car\n  1: person\ntrain: images/train\nval: images/val\n"):
    for i in range(3):
        _image(root / "images" / "train" / f"{i}.png")
    _image(root / "images" / "val" / "0.png")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "0.txt").write_text("0 0.5 0.5 0.25 0.5\n\n1 0.125 0.25 0.25 "
                                                     "0.5\n")
    (root / "labels" / "train" / "1.txt").write_text("")
    (root / "data.yaml").write_text(yaml)
    return root


def test_yolo_good(tmp_path):
    ds = load_yolo(_yolo(tmp_path))
    assert isinstance(ds, DetectionSet) and ds.names == ("car", "person")
    assert ds.images.shape == (3, 3, 24, 32) and ds.images.dtype == np.uint8
    np.testing.assert_allclose(ds.boxes[0], [[12, 6, 20, 18], [0, 0, 8, 12]])
    assert ds.boxes[0].dtype == np.float32 and ds.classes[0].dtype == np.int64
    assert ds.classes[0].tolist() == [0, 1] and len(ds.boxes[1]) == len(ds.boxes[2]) == 0
    assert [f.name for f in ds.files] == ["0.png", "1.png", "2.png"] and ds.num_boxes == 2
    assert len(load_yolo(tmp_path / "data.yaml", "val")) == 1
    small = load_yolo(tmp_path, size=(16, 48))  # (W, H): boxes scale with the image
    assert small.images.shape == (3, 3, 48, 16)
    np.testing.assert_allclose(small.boxes[0][0], [6, 12, 10, 36])


@pytest.mark.parametrize("yaml", [
    "# comment\npath: .\ntrain: images/train  # trailing\nnc: 2\nnames: ['car', \"person\"]\n",
    "train: [images/train]\nnames:\n  - car\n\n  - person  # a comment\ndownload: |\n  x: 1\n",
    "names: {0: car, 1: person}\ntrain: images/train\n",
])
def test_yolo_yaml_variants(tmp_path, yaml):
    assert load_yolo(_yolo(tmp_path, yaml)).names == ("car", "person")


def test_yolo_list_file_gray_and_writers(tmp_path):
    _image(tmp_path / "images" / "a" / "x.png", mode="L")
    _image(tmp_path / "images" / "a" / "y.jpg")
    (tmp_path / "list.txt").write_text("images/a/x.png\nimages/a/y.jpg\n")
    (tmp_path / "labels" / "a").mkdir(parents=True)
    write_labels(label_path(tmp_path / "images" / "a" / "x.png"), [[4, 6, 20, 18]], [0],
                 (32, 24))
    write_data_yaml(tmp_path, ["thing"], train="list.txt")
    ds = load_yolo(tmp_path)
    assert ds.images.shape == (2, 1, 24, 32) and ds.names == ("thing",)
    np.testing.assert_allclose(ds.boxes[0], [[4, 6, 20, 18]], atol=1e-3)
    assert read_data_yaml(tmp_path / "data.yaml")["path"] == str(tmp_path.resolve())


@pytest.mark.parametrize("line, why", [
    ("0 0.5 0.5 0.2", "expected 5 columns"),
    ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 columns"),
    ("2 0.5 0.5 0.2 0.2", "class: 2 out of range"),
    ("-1 0.5 0.5 0.2 0.2", "class: expected an integer"),
    ("a 0.5 0.5 0.2 0.2", "class: expected an integer"),
    ("0 1.5 0.5 0.2 0.2", "cx: coordinates must be normalised"),
    ("0 0.5 0.5 -0.2 0.2", "w: expected a size >= 0"),
    ("0 0.5 x 0.2 0.2", "expected numbers"),
    ("0 0.5 nan 0.2 0.2", "cy: not finite"),
])
def test_yolo_bad_labels(tmp_path, line, why):
    _yolo(tmp_path)
    f = tmp_path / "labels" / "train" / "2.txt"
    f.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DataError, match=why) as e:
        load_yolo(tmp_path)
    assert str(e.value).startswith(f"{f}: line 2: ")


@pytest.mark.parametrize("yaml, why", [
    ("train: images/train\n", "field 'names': missing"),
    ("names: [a, b]\nnc: 3\ntrain: images/train\n", "field 'nc': 3 but 'names' has 2"),
    ("names: [a, b]\n", "field 'train': missing"),
    ("names: [a, b\ntrain: images/train\n", "line 1: flow list not closed"),
    ("names: {0: a, 2: b}\ntrain: images/train\n", "field 'names': expected keys 0..1"),
    ("names: [a]\ntrain: nowhere\n", "field 'train': .*nowhere is neither a folder"),
    ("names: [a]\njust text\n", "line 2: expected 'key: value'"),
    ("  - a\n", "line 1: indented line without a key"),
])
def test_yolo_bad_yaml(tmp_path, yaml, why):
    _yolo(tmp_path, yaml)
    with pytest.raises(DataError, match=why) as e:
        load_yolo(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "data.yaml"))


def test_yolo_mixed_sizes_and_bad_image(tmp_path):
    _yolo(tmp_path)
    _image(tmp_path / "images" / "train" / "1.png", size=(40, 24))
    with pytest.raises(DataError, match=r"1.png: size: 40x24 \(WxH\) but .*0.png is 32x24"):
        load_yolo(tmp_path)
    assert load_yolo(tmp_path, size=(32, 24)).images.shape == (3, 3, 24, 32)
    (tmp_path / "images" / "train" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="2.png: not a readable image"):
        load_yolo(tmp_path, size=(32, 24))
    with pytest.raises(DataError, match="no data.yaml"):
        load_yolo(tmp_path / "images")


def _coco(tmp_path, **changes):
    for i in range(2):
        _image(tmp_path / "imgs" / f"{i}.png")
    data = {"images": [{"id": 10, "file_name": "imgs/0.png", "width": 32, "height": 24},
                       {"id": 11, "file_name": "imgs/1.png"}],
            "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5]},
                            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 32, 24]},
                            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [5, 5, 2, 2],
                             "iscrowd": 1}]}
    for key, value in changes.items():
        section, index, field = key.split("__")
        data[section][int(index)][field] = value
    (tmp_path / "ann.json").write_text(json.dumps(data, indent=1))
    return tmp_path / "ann.json"


def test_coco_good(tmp_path):
    ds = load_coco(_coco(tmp_path))
    assert ds.names == ("car", "person") and ds.meta["category_ids"] == (3, 7)
    assert ds.meta["image_ids"] == (10, 11) and ds.images.shape == (2, 3, 24, 32)
    np.testing.assert_allclose(ds.boxes[0], [[1, 2, 11, 7], [0, 0, 32, 24]])
    assert ds.classes[0].tolist() == [1, 0] and len(ds.boxes[1]) == 0  # crowd skipped
    big = load_coco(tmp_path / "ann.json", tmp_path, size=(64, 48))
    np.testing.assert_allclose(big.boxes[0][0], [2, 4, 22, 14])


@pytest.mark.parametrize("change, why", [
    ({"annotations__0__image_id": 99}, r"annotations\[0\].image_id: unknown image id 99"),
    ({"annotations__1__category_id": 5}, r"annotations\[1\].category_id: unknown category id 5"),
    ({"annotations__0__bbox": [1, 2, -3, 4]}, r"annotations\[0\].bbox: negative size"),
    ({"annotations__0__bbox": [1, 2, 3]}, r"annotations\[0\].bbox: expected 4 numbers"),
    ({"annotations__0__bbox": [20, 2, 30, 4]}, r"annotations\[0\].bbox: .* outside the 32x24"),
    ({"images__1__file_name": "imgs/9.png"}, r"images\[1\].file_name: .*9.png not found"),
    ({"images__1__id": 10}, r"images\[1\].id: duplicate image id 10"),
    ({"images__0__width": 40}, r"0.png: size: the annotations say 40x24"),
    ({"categories__1__id": 7}, r"categories\[1\].id: duplicate category id 7"),
    ({"categories__0__name": 5}, r"categories\[0\].name: expected a string"),
])
def test_coco_bad(tmp_path, change, why):
    path = _coco(tmp_path, **change)
    with pytest.raises(DataError, match=why) as e:
        load_coco(path)
    assert str(e.value).startswith(str(path) if "size:" not in why else str(tmp_path))


def test_coco_bad_json(tmp_path):
    (tmp_path / "a.json").write_text('{"images": [\n  1,\n')
    with pytest.raises(DataError, match=r"a.json: line 3: not valid JSON"):
        load_coco(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="b.json: field 'categories': missing"):
        load_coco(tmp_path / "b.json")
