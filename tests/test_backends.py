"""The one table of backends (engine/backends.py) and the places that must agree with it."""
from __future__ import annotations

import pytest

from engine.backends import BACKENDS, PRECISIONS, TABLE, check_backend, describe_precisions
from engine.graph_cache import PRECISIONS as EXPORT_PRECISIONS
from engine.runtime import TorchRuntime


def test_table_and_its_readers_agree():
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt")
    assert TorchRuntime.PRECISIONS == TABLE["torch"].precisions
    assert set(TABLE["onnxruntime"].precisions) == set(EXPORT_PRECISIONS)  # graphs per precision
    assert set(PRECISIONS) == {"fp32", "tf32", "bf16", "fp16"}
    assert {b: e.default_precision for b, e in TABLE.items()} == {
        "torch": "fp32", "onnxruntime": "fp32", "tensorrt": "fp16"}
    assert describe_precisions().startswith("torch: fp32 | tf32 | bf16 | fp16; onnxruntime: "
                                            "fp32 | fp16")


@pytest.mark.parametrize("args, match", [
    (("tensorrtt",), r"unknown backend 'tensorrtt'; choose one of torch, onnxruntime, tensorrt"),
    (("torch", "int8"), r"precision 'int8' is not supported by the torch backend; use one of "
                        r"fp32, tf32, bf16, fp16"),
    (("torch", "fp16", "cpu"), r"precision 'fp16' is not supported by the torch backend on "
                               r"cpu; use one of fp32, bf16 \(tf32 needs cuda; fp16 needs cuda\)"),
    (("tensorrt", "bf16"), r"use one of fp16, fp32"),
    (("tensorrt", None, "cpu"), r"device 'cpu' is not supported by the tensorrt backend; it "
                                r"runs on cuda"),
])
def test_unsupported_choices_are_refused_with_what_is_supported(args, match):
    with pytest.raises(ValueError, match=match):
        check_backend(*args)


def test_supported_choices_pass():
    assert check_backend("onnxruntime", "fp16", "cuda:1").name == "onnxruntime"
    assert check_backend("torch", "bf16", "cpu").devices == ("cpu", "cuda")
    assert check_backend("torch", "fp16", "cuda:0").precisions_on("cuda:0") == (
        "fp32", "tf32", "bf16", "fp16")
