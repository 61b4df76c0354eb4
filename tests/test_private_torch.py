"""srfeat.ops.private_torch: with each private PyTorch API taken away or failing, as a PyTorch
upgrade might leave it, results stay right (only slower)."""

from __future__ import annotations

import logging
import types

import pytest
import torch
from inference_helpers import tiny_generator

from srfeat import library_warnings
from srfeat.inference import InferenceGenerator
from srfeat.ops.private_torch import PrivateTorchError, matmul, nnpack_available, nnpack_conv3x3, prepack_matmul_weight


def _fail(*args: object) -> torch.Tensor:
    raise RuntimeError("the private op changed")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library_warnings, "_warned", set())


def _without_onednn_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.ops.mkldnn makes ops on attribute access: replace the namespace to take them away.
    monkeypatch.setattr(torch.ops, "mkldnn", types.SimpleNamespace())


def _without_nnpack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch, "_nnpack_available", raising=False)
    monkeypatch.delattr(torch, "_nnpack_spatial_convolution", raising=False)


def test_nnpack_is_unavailable_when_its_check_is_gone_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "_nnpack_available", _fail, raising=False)
    assert nnpack_available() is False
    monkeypatch.delattr(torch, "_nnpack_available")
    assert nnpack_available() is False


def test_nnpack_convolution_gone_or_failing_raises_the_callers_fallback_error(monkeypatch: pytest.MonkeyPatch) -> None:
    x, weight = torch.rand(1, 4, 6, 6), torch.rand(4, 4, 3, 3)
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", _fail, raising=False)
    with pytest.raises(PrivateTorchError, match="failed: the private op changed"):
        nnpack_conv3x3(x, weight, None)
    monkeypatch.delattr(torch, "_nnpack_spatial_convolution")
    with pytest.raises(PrivateTorchError, match="missing"):
        nnpack_conv3x3(x, weight, None)
    assert issubclass(PrivateTorchError, RuntimeError)


@pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build has no NNPACK")
def test_nnpack_convolution_equals_the_public_one() -> None:
    x, weight, bias = torch.rand(2, 8, 9, 7), torch.randn(8, 8, 3, 3), torch.randn(8)
    expected = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(nnpack_conv3x3(x, weight, bias), expected, rtol=1e-5, atol=1e-5)


def test_matmul_with_a_failing_onednn_linear_falls_back_to_mm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rows, weight = torch.rand(50, 16), torch.randn(16, 27)
    packed = prepack_matmul_weight(weight)
    if not packed.is_mkldnn:
        pytest.skip("no oneDNN prepacking in this PyTorch build")
    torch.testing.assert_close(matmul(rows, packed), rows @ weight, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", _fail)
    with caplog.at_level(logging.WARNING, logger="srfeat.ops.private_torch"):
        torch.testing.assert_close(matmul(rows, packed), rows @ weight, rtol=1e-5, atol=1e-5)
        matmul(rows, packed)
    assert [r.getMessage() for r in caplog.records].count(
        "torch.ops.mkldnn._linear_pointwise is unavailable in this PyTorch (the private op changed); "
        "using a slower public equivalent"
    ) == 1
    _without_onednn_ops(monkeypatch)
    torch.testing.assert_close(matmul(rows, packed), rows @ weight, rtol=1e-5, atol=1e-5)


def test_prepacking_without_onednn_ops_keeps_the_plain_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    rows, weight = torch.rand(50, 16), torch.randn(16, 27)
    _without_onednn_ops(monkeypatch)
    packed = prepack_matmul_weight(weight)
    assert packed is weight
    torch.testing.assert_close(matmul(rows, packed), rows @ weight)


def test_inference_is_right_with_every_private_api_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = tiny_generator(num_features=16)
    image = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        expected = generator(image)
    # A model made while the APIs were there (NNPACK on, the tail prepacked), then an "upgrade".
    model = InferenceGenerator(generator)
    model.use_nnpack = True
    torch.testing.assert_close(model(image), expected, rtol=0, atol=1e-5)
    _without_nnpack(monkeypatch)
    _without_onednn_ops(monkeypatch)
    torch.testing.assert_close(model(image), expected, rtol=0, atol=1e-5)
    assert not model.use_nnpack
    # And a model made after it.
    fresh = InferenceGenerator(generator)
    assert not fresh.use_nnpack
    torch.testing.assert_close(fresh(image), expected, rtol=0, atol=1e-5)
