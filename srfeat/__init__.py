"""SRFeat: single-image super-resolution with feature discrimination (Park et al., ECCV 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Upscaler", "__version__"]

if TYPE_CHECKING:
    from srfeat.inference import Upscaler


def __getattr__(name: str) -> Any:
    # `import srfeat` stays light (no torch): the API is imported on first use.
    if name == "Upscaler":
        from srfeat.inference import Upscaler

        return Upscaler
    raise AttributeError(f"module 'srfeat' has no attribute {name!r}")
