"""Graph format v2 (lowbit.codec.graph): round trip, v1 upgrade, refusals that name the op."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from lowbit import codec
from lowbit.codec import FormatError
from lowbit.codec.graph import VERSION, consumers, new_graph, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _residual():
    inputs = [{"name": "input", "shape": [3, 8, 8], "dtype": "uint8",
               "normalization": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                                 "scale": 255.0}}]
    ops = [
        {"op": "conv2d", "name": "stem", "inputs": ["input"], "outputs": ["a"],
         "weight": "stem.weight", "bias": None, "stride": [1, 1], "padding": [1, 1]},
        {"op": "relu", "inputs": ["a"], "outputs": ["b"]},
        {"op": "conv2d", "name": "c2", "inputs": ["b"], "outputs": ["c"],
         "weight": "c2.weight", "bias": None, "stride": [1, 1], "padding": [1, 1]},
        {"op": "add", "inputs": ["b", "c"], "outputs": ["d"]},
        {"op": "global_avgpool", "inputs": ["d"], "outputs": ["e"]},
        {"op": "flatten", "inputs": ["e"], "outputs": ["logits"]},
    ]
    tensors = {"stem.weight": codec.model.raw(np.ones((4, 3, 3, 3), np.float32)),
               "c2.weight": codec.model.raw(np.ones((4, 4, 3, 3), np.float32))}
    return new_graph(inputs, ops, ["logits", "b"]), tensors


def test_round_trip(tmp_path):
    graph, tensors = _residual()
    codec.save(tmp_path / "g.lbm", graph, tensors)
    mf = codec.load(tmp_path / "g.lbm")
    assert mf.graph == graph
    g = parse(mf.graph, "g", mf.entries)
    assert g["version"] == VERSION == 2
    assert consumers(g)["b"] == [2, 3, -1]


def test_v1_file_is_upgraded():
    mf = codec.load(FIXTURES / "v1-bnn-lenet5.lbm")
    assert mf.graph["version"] == 1 and "inputs" not in mf.graph
    g = parse(mf.graph, "v1", mf.entries)
    assert g["version"] == 2 and g["inputs"][0]["name"] == "input"
    assert g["inputs"][0]["shape"] == [1, 28, 28]
    chain = ["input"] + [op["outputs"][0] for op in g["ops"]]
    assert [op["inputs"] for op in g["ops"]] == [[v] for v in chain[:-1]]
    assert g["outputs"] == [chain[-1]]


def test_future_version_is_refused():
    graph, _ = _residual()
    graph["version"] = 3
    with pytest.raises(FormatError, match=r"version 3 is not supported.*upgrade lowbit"):
        parse(graph)


def _broken(edit):
    graph, tensors = _residual()
    graph = copy.deepcopy(graph)
    edit(graph)
    return graph, tensors


@pytest.mark.parametrize("edit,match", [
    (lambda g: g["ops"][1].update(inputs=["nope"]), r"op 1 \(relu\): input 'nope' is not defined"),
    (lambda g: g["ops"][2].update(outputs=["a"]), r"op 2 'c2' \(conv2d\): output 'a' is already"),
    (lambda g: g["ops"][1].update(op="gelu"), r"op 1: field 'op': unknown op 'gelu'"),
    (lambda g: g["ops"][0].update(stride=[0, 1]), r"op 0 'stem'.*'stride': expected two integers >= 1"),
    (lambda g: g["ops"][0].pop("padding"), r"op 0 'stem' \(conv2d\): missing field\(s\) 'padding'"),
    (lambda g: g["ops"][0].update(weight="ghost"), r"'weight': no tensor 'ghost' in the file"),
    (lambda g: g["ops"][3].update(inputs=["b"]), r"op 3 \(add\): field 'inputs': expected a list of 2 or more"),
    (lambda g: g.update(outputs=["zzz"]), r"field 'outputs'"),
    (lambda g: g["inputs"][0]["normalization"].update(std=[1.0, 0.0, 1.0]), r"'std': expected positive"),
    (lambda g: g["inputs"][0]["normalization"].update(mean=[0.1, 0.2]), r"2 values for 3 input channels"),
    (lambda g: g["inputs"][0].update(dtype="int64"), r"'dtype'"),
    (lambda g: g["ops"][2].update(name="stem"), r"'name': expected a unique string"),
])
def test_inconsistent_graphs_are_refused(edit, match):
    graph, tensors = _broken(edit)
    with pytest.raises(FormatError, match=match):
        parse(graph, "g", tensors)


def test_runtime_refuses_an_edited_file(tmp_path):
    """A file re-signed after editing its graph is refused at load, naming the op."""
    from lowbit.runtime.graph import Runtime
    graph, tensors = _broken(lambda g: g["ops"][4].update(inputs=["bogus"]))
    codec.save(tmp_path / "bad.lbm", graph, tensors)
    with pytest.raises(FormatError, match=r"bad.lbm: graph: op 4 \(global_avgpool\): input 'bogus'"):
        Runtime(tmp_path / "bad.lbm")


# ---- re-signed files with an edited graph or tensors: refused at load, naming op and field ----
def _resign(tmp_path, edit_graph=None, edit_sections=None):
    from lowbit.codec import container
    header, sections = container.load(FIXTURES / "v1-bnn-lenet5.lbm")
    g = parse(header["graph"], "g")
    if edit_graph:
        edit_graph({op.get("name") or op["op"]: op for op in g["ops"]}, g)
    if edit_sections:
        edit_sections(sections)
    header["graph"] = g
    container.save(tmp_path / "e.lbm", header, sections)
    return tmp_path / "e.lbm"


@pytest.mark.parametrize("edit,match", [
    (lambda ops, g: ops["conv2"].update(in_channels=ops["conv2"]["in_channels"] + 1),
     r"op 3 'conv2' \(qconv2d\): field 'weight': shape \(15, 5, 5, 6\), expected .*\(15, 5, 5, 7\)"),
    (lambda ops, g: ops["conv2"].update(out="bogus"), r"'conv2'.*field 'out': expected 'float' or 'bits'"),
    (lambda ops, g: ops["conv2"].update(stride=[0, 1]), r"'conv2'.*'stride': expected two integers >= 1"),
    (lambda ops, g: ops["conv2"].pop("threshold"), r"'conv2'.*out 'bits' needs fields 'threshold' and 'flip'"),
    (lambda ops, g: ops["conv2"].update(kernel=[30, 5], in_channels=6),
     r"'conv2'.*field 'weight': shape \(15, 5, 5, 6\)"),
    (lambda ops, g: ops["fc1"].update(in_channels=10), r"'fc1' \(qdense\): field 'weight'"),
    (lambda ops, g: ops["conv1"].update(padding=[-1, 0]), r"'conv1'.*'padding': expected two integers >= 0"),
    (lambda ops, g: ops["bn4"].update(eps=0), r"'bn4'.*'eps': expected a positive number"),
    (lambda ops, g: ops["maxpool2d"].update(kernel=[40, 40]), r"op 1 \(maxpool2d\): kernel 40"),
    (lambda ops, g: ops["conv2"].update(w_levels="quaternary"), r"'conv2'.*'w_levels'"),
    (lambda ops, g: ops["conv2"].update(**{"in": "gray"}), r"'conv2'.*field 'in'"),
])
def test_edited_and_resigned_files_are_refused(tmp_path, edit, match):
    from lowbit.runtime.graph import Runtime
    path = _resign(tmp_path, edit_graph=edit)
    with pytest.raises(FormatError, match=match):
        Runtime(path)


def test_nan_weights_are_refused(tmp_path):
    from lowbit.runtime.graph import Runtime

    def poison(sections):
        w = sections["conv1.weight"].copy()
        w.flat[3] = np.nan
        sections["conv1.weight"] = w
    with pytest.raises(FormatError, match=r"tensor 'conv1.weight': raw tensor: contains NaN"):
        Runtime(_resign(tmp_path, edit_sections=poison))
