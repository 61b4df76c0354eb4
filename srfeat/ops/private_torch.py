"""The private PyTorch APIs srfeat calls for speed, each behind a guard with a public fallback.

Private APIs (a leading underscore) may change or vanish in any PyTorch release. Every call
into one goes through this module, and each function here gives the right result without it:
a missing or failing private API costs speed, never behaviour. What each one falls back to:

- `nnpack_available`: False (the inference generator then uses srfeat's own Winograd kernels);
- `nnpack_conv3x3`: raises `PrivateTorchError`, a RuntimeError, which the caller answers by
  switching to its public path (`InferenceGenerator` does, once, with a warning);
- `prepack_matmul_weight` / `matmul`: `torch.mm` on the plain weight, with one warning.

tests/test_private_torch.py takes each API away (or makes it raise) and checks the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from srfeat.library_warnings import warn_once

__all__ = ["PrivateTorchError", "matmul", "nnpack_available", "nnpack_conv3x3", "prepack_matmul_weight"]

logger = logging.getLogger(__name__)


class PrivateTorchError(RuntimeError):
    """A private PyTorch API that srfeat uses for speed is missing or failed."""


def _private(owner: object, name: str) -> Callable[..., Any] | None:
    # `torch.ops.<namespace>` makes ops on attribute access and raises AttributeError (or, in
    # some versions, RuntimeError) for unknown ones.
    try:
        function = getattr(owner, name, None)
    except RuntimeError:
        return None
    return function if callable(function) else None


def _warn_unavailable(api: str, error: BaseException) -> None:
    warn_once(logger, api, f"{api} is unavailable in this PyTorch ({error}); using a slower public equivalent")


def nnpack_available() -> bool:
    """Whether PyTorch's NNPACK runs here (asking also initialises it, which its convolution needs)."""
    check = _private(torch, "_nnpack_available")
    if check is None:
        return False
    try:
        return bool(check())
    except RuntimeError:
        return False


def nnpack_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 stride-1 convolution with 1-pixel zero padding by NNPACK, NCHW float32 on a CPU.

    Raises `PrivateTorchError` where NNPACK's convolution is missing or fails; the caller
    then uses its public path for good.
    """
    convolve = _private(torch, "_nnpack_spatial_convolution")
    if convolve is None:
        raise PrivateTorchError("torch._nnpack_spatial_convolution is missing")
    try:
        return convolve(x, weight, bias, [1, 1])
    except (RuntimeError, TypeError) as error:  # TypeError: a changed signature
        raise PrivateTorchError(f"torch._nnpack_spatial_convolution failed: {error}") from error


def prepack_matmul_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (in, out) for `matmul`: prepacked for oneDNN where it can be (about twice MKL's
    speed for narrow products such as the generator's tail), else `weight` itself."""
    if not torch.backends.mkldnn.is_available() or _private(torch.ops.mkldnn, "_linear_pointwise") is None:
        return weight
    reorder = _private(torch.ops.mkldnn, "_reorder_linear_weight")
    if reorder is None:
        return weight
    try:
        return reorder(weight.t().contiguous(), None)
    except (RuntimeError, TypeError) as error:
        _warn_unavailable("torch.ops.mkldnn._reorder_linear_weight", error)
        return weight


def matmul(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`rows @ weight` for a weight from `prepack_matmul_weight`: (N, in) -> (N, out)."""
    if not weight.is_mkldnn:
        return torch.mm(rows, weight)
    linear = _private(torch.ops.mkldnn, "_linear_pointwise")
    try:
        if linear is None:
            raise PrivateTorchError("torch.ops.mkldnn._linear_pointwise is missing")
        return linear(rows, weight, None, "none", [], "")
    except (RuntimeError, TypeError) as error:
        _warn_unavailable("torch.ops.mkldnn._linear_pointwise", error)
        # The prepacked weight is (out, in), as nn.Linear's; to_dense is public.
        return torch.mm(rows, weight.to_dense().t())
