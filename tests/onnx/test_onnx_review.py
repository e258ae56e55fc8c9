"""Malformed or unusual ONNX files found in review: each must read, or fail with a typed llmstd error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import llmstd
from llmstd.converters import onnx_io
from llmstd.errors import FormatError


def _save(directory: Path, initializers: list, nodes: list = ()) -> Path:  # type: ignore[assignment]
    from onnx import helper

    graph = helper.make_graph(list(nodes), "g", [], [], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _external(offset: str):  # type: ignore[no-untyped-def]
    from onnx import TensorProto

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", offset), ("length", "16")):
        item = tensor.external_data.add()
        item.key, item.value = key, value
    return tensor


@pytest.mark.parametrize("offset", ["²", "٣", "0" * 5000])
def test_non_ascii_or_huge_offsets_are_a_format_error(tmp_path: Path, offset: str) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(16))
    path = _save(tmp_path, [_external(offset)])
    with pytest.raises(FormatError, match="not a non-negative integer") as info:
        onnx_io.read(path)
    assert info.value.file == str(path)


def test_empty_tensor_with_huge_dimension_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    path = _save(tmp_path, [helper.make_tensor("z", TensorProto.FLOAT, [0, 2**62], [])])
    with pytest.raises(FormatError, match="impossibly large"):
        for tensor in onnx_io.read(path).tensors.values():
            tensor.load()


def test_string_constant_does_not_stop_reading(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    const = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.STRING, [1], [b"x"]))
    path = _save(tmp_path, [helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])], [const])
    f = onnx_io.read(path)
    assert f.tensors["w"].load().tolist() == [1.0, 2.0]
    assert "c" in f.unsupported


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 16, "hidden_size": 8,
         "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
         "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}


def _foreign(directory: Path, nodes: list, initializers: list) -> Path:
    path = _save(directory, initializers, nodes)
    (directory / "config.json").write_text(json.dumps(LLAMA), encoding="utf-8")
    return path


def test_transpose_of_a_3d_initializer_is_not_a_folded_matrix(tmp_path: Path) -> None:
    """A Transpose without perm reverses all axes; on a 3-D or 1-D tensor it is no folded x @ W.T."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 4, 8), np.float32), "w3")
    v = numpy_helper.from_array(np.ones(8, np.float32), "v1")
    nodes = [helper.make_node("Transpose", ["w3"], ["t"], name="/model/layers.0/self_attn/q_proj/Transpose"),
             helper.make_node("MatMul", ["x", "t"], ["y"], name="/model/layers.0/self_attn/q_proj/MatMul"),
             helper.make_node("Transpose", ["v1"], ["tv"], name="/model/norm/Transpose"),
             helper.make_node("Mul", ["y", "tv"], ["z"], name="/model/norm/Mul")]
    _foreign(tmp_path / "m", nodes, [w, v])
    with pytest.raises(llmstd.LlmstdError):
        llmstd.load(tmp_path / "m")


def test_unhashable_scope_metadata_is_ignored(tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    node = helper.make_node("Mul", ["x", "v1"], ["z"])
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "{[1]}"
    _foreign(tmp_path / "m", [node], [numpy_helper.from_array(np.ones(8, np.float32), "v1")])
    with pytest.raises(llmstd.LlmstdError):
        llmstd.load(tmp_path / "m")


def test_pass_through_node_without_output(tmp_path: Path) -> None:
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Identity", ["v1"], [], name="/model/norm/Identity"),
             helper.make_node("MatMul", ["x", "w"], [], name="/model/layers.0/self_attn/q_proj/MatMul")]
    _foreign(tmp_path / "m", nodes, [numpy_helper.from_array(np.ones(8, np.float32), "v1"),
                                     numpy_helper.from_array(np.ones((8, 8), np.float32), "w")])
    with pytest.raises(llmstd.LlmstdError):
        llmstd.load(tmp_path / "m")


def test_invalid_utf8_name_is_a_format_error(tmp_path: Path) -> None:
    """protobuf returns a string field that is not UTF-8 as bytes; that must not reach name handling."""
    from onnx import TensorProto, helper

    path = _save(tmp_path, [helper.make_tensor("wq", TensorProto.FLOAT, [2], [1.0, 2.0])])
    path.write_bytes(path.read_bytes().replace(b"wq", b"w\xff"))
    with pytest.raises(FormatError, match="UTF-8") as info:
        llmstd.load(path)
    assert info.value.file == str(path)
