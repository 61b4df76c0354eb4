"""The kinds of image `Upscaler` takes: PIL images, numpy arrays and tensors, each checked and turned
into the one (C, H, W) float path (`Upscaler.upscale_channels`), and the result given back as the
kind, dtype and layout that came in."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, overload

import numpy as np
import torch

from srfeat.errors import ImageReadError, InvalidImageError, NotAnImageError, SRFeatError
from srfeat.inference.checks import check_channels, check_outscale, check_size
from srfeat.inference.pixels import check_dtype, from_float_tensor, to_float_tensor
from srfeat.inference.tiling import check_batch_memory

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["ImageKinds"]


class ImageKinds(ABC):
    """`Upscaler`'s entry points for each kind of image, on top of its (C, H, W) float path."""

    @abstractmethod
    def upscale_channels(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor:
        """(C, H, W) float in [0, 1], C = 1 to 4 -> (C, H', W') float32 in [0, 1] on the host."""

    @abstractmethod
    def check_memory(self, channels: int, height: int, width: int) -> None:
        """Refuse, before anything is allocated, an image whose result the host cannot hold."""

    @abstractmethod
    def output_size(
        self, height: int, width: int, outscale: float | None = None, *, command_line: bool = False
    ) -> tuple[int, int]:
        """(height, width) of the result for an input of that size."""

    @overload
    def __call__(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor: ...
    @overload
    def __call__(self, image: np.ndarray, outscale: float | None = None) -> np.ndarray: ...
    @overload
    def __call__(self, image: Image.Image, outscale: float | None = None) -> Image.Image: ...

    def __call__(self, image, outscale=None):
        """Upscale a PIL image, a numpy array (HxW or HxWxC; uint8, uint16 or float in [0, 1]) or a
        float tensor in [0, 1] ((C, H, W) or (N, C, H, W)); returns the same kind, dtype and layout.
        An array is read channels last even where its first side could be channels (a warning says so)."""
        if isinstance(image, torch.Tensor):
            return self.upscale_tensor(image, outscale)
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[0] <= 4 < image.shape[1] and 1 <= image.shape[2] <= 4:
                # HxWxC by the documented rule, but a channels-first image 4 or fewer pixels wide has this
                # shape too: its result would be a wrong picture of the same kind, without a word
                logger.warning(
                    "the array of shape %s is read as HxWxC, %d row(s) of %d pixels with %d channel(s); "
                    "if it is channels first (C, H, W), pass array.transpose(1, 2, 0)",
                    image.shape,
                    *image.shape,
                )
            return self.upscale_array(image, outscale)
        from PIL import Image

        if isinstance(image, Image.Image):
            return self.upscale_pil(image, outscale)
        advice = (
            ": call the upscaler once per image (a (N, C, H, W) tensor batches images of one size)"
            if isinstance(image, (list, tuple))
            else ""
        )
        raise NotAnImageError(
            f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}{advice}"
        )

    def upscale_tensor(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor:
        """(C, H, W) or (N, C, H, W) float in [0, 1] -> the same layout, dtype and device.

        Any layout (channels_last, a transposed view) and device is read; the result is a new
        contiguous tensor that does not require grad. A batch is upscaled image by image.
        """
        if isinstance(image, torch.masked.MaskedTensor):  # torch's "Multiple dispatch failed" TypeError, inside
            raise InvalidImageError(
                "the tensor is a torch MaskedTensor, and the upscaler does not read masks: fill the masked values "
                "first (torch.where(tensor.get_mask(), tensor.get_data(), value)), or pass tensor.get_data() if the "
                "mask means nothing"
            )
        if not image.is_floating_point():
            raise InvalidImageError(
                f"expected a float tensor with values in [0, 1], got {image.dtype}; e.g. tensor.float() / 255"
            )
        if image.is_nested:  # (strided or jagged) without sizes: torch's "Internal error ... Please file an issue"
            raise InvalidImageError(
                "expected a dense tensor, got a nested one: call the upscaler once per image "
                "(torch.stack images of one size into an (N, C, H, W) batch)"
            )
        if image.layout != torch.strided:  # torch's NotImplementedError, deep inside, otherwise
            raise InvalidImageError(f"expected a dense tensor, got a {image.layout} one; use tensor.to_dense()")
        if image.dim() in (3, 4) and image.shape[-3] > 4 and image.shape[-2] > 4 and 1 <= image.shape[-1] <= 4:
            order = "2, 0, 1" if image.dim() == 3 else "0, 3, 1, 2"
            raise InvalidImageError(
                f"expected a (C, H, W) or (N, C, H, W) tensor (C = 1 to 4), got shape {tuple(image.shape)}: "
                f"channels last? use tensor.permute({order})"
            )
        if image.dim() == 3:
            # the result is laid out height-width-channel (as arrays and image files want it): made
            # contiguous here, as documented, else `result.view(...)` failed on it. One copy: `to`
            # converting makes it contiguous, and where it converts nothing it ignores memory_format.
            result = self.upscale_channels(image, outscale)
            return result.to(image.device, image.dtype, memory_format=torch.contiguous_format).contiguous()
        if image.dim() == 4:
            count, channels, height, width = image.shape
            check_channels(channels)
            check_outscale(outscale)
            check_size(height, width)
            size = self.output_size(height, width, outscale)
            if count == 0:  # an empty batch: the empty batch of results
                return image.new_zeros((0, channels, *size))
            # One output for the batch, filled image by image, checked before the first: a list of the
            # results and their stack held the batch twice, and only each image's own result was checked.
            check_batch_memory(count, channels, size, image.element_size(), image.device)
            results = image.new_empty((count, channels, *size))
            for index, item in enumerate(image):
                results[index] = self.upscale_channels(item, outscale)
            return results
        raise InvalidImageError(f"expected a (C, H, W) or (N, C, H, W) tensor, got shape {tuple(image.shape)}")

    def upscale_array(self, array: np.ndarray, outscale: float | None = None) -> np.ndarray:
        """HxW or HxWxC numpy array, uint8, uint16 or float in [0, 1] -> the same dtype and layout."""
        if isinstance(array, np.ma.MaskedArray):  # its data was upscaled, masked pixels too, and the mask dropped
            raise InvalidImageError(
                f"the array is a numpy masked array ({np.ma.count_masked(array):,} value(s) masked), and the "
                "upscaler does not read masks: fill the masked values first (array.filled(value)), or pass "
                "array.data if the mask means nothing"
            )
        if array.ndim not in (2, 3):
            raise InvalidImageError(f"expected an HxW or HxWxC array, got shape {array.shape}")
        if array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4):
            raise InvalidImageError(
                f"expected an HxWxC array (C = 1 to 4), got shape {array.shape}: channels first? "
                "use array.transpose(1, 2, 0)"
            )
        hwc = array[..., None] if array.ndim == 2 else array
        check_dtype(array.dtype)
        check_channels(hwc.shape[2])
        check_outscale(outscale)
        check_size(*hwc.shape[:2])
        # Before the pixels are converted (4 bytes a value: a huge array was copied, then refused).
        self.check_memory(hwc.shape[2], *hwc.shape[:2])
        result = self.upscale_channels(to_float_tensor(hwc), outscale)
        output = from_float_tensor(result, array.dtype)
        return output[..., 0] if array.ndim == 2 else output

    def upscale_pil(self, image: Image.Image, outscale: float | None = None) -> Image.Image:
        """A PIL image -> a PIL image in the plain mode it maps to: L, LA, RGB, RGBA and F stay, 16-bit
        gray comes back I;16, other modes RGB(A) or L (the README's table, `srfeat.data.io.pil_to_array`).

        The ICC profile, if any, is carried over, unless it describes another colour space than
        the result's (a CMYK one, whose colours were converted through it into sRGB; an RGB one
        on grey): that is dropped with a warning, as from files. EXIF orientation is not applied
        here (the caller decides; `srfeat.data.io.open_image` and `ImageOps.exif_transpose` apply it):
        an image whose orientation is other than 1 (a phone's photo from `Image.open`) is upscaled as
        stored, and the result, which has no EXIF, shows turned or mirrored: a warning says so.
        """
        from srfeat.data.colour_profiles import is_cmyk_profile, other_colour_space
        from srfeat.data.io import DECODE_ERRORS, array_to_pil, pil_to_array

        try:  # a lazily opened file decodes here: its damage was PIL's own OSError or ValueError, from inside
            image.load()
            pixels = pil_to_array(image)
        except SRFeatError:
            raise
        except DECODE_ERRORS as error:
            source = _named(image)
            problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ImageReadError(
                f"the PIL image{source} cannot be decoded: {problem}; a damaged file, or one closed before upscaling?"
            ) from error
        _warn_if_oriented(image)  # after `load`: PIL turns a TIFF upright as it loads, and drops its tag
        array = self.upscale_array(pixels, outscale)
        if array.dtype == np.uint16 and array.shape[2] == 2:  # I;16 with a see-through level: PIL has no 16-bit LA
            array = np.rint(array / 257.0).astype(np.uint8)
        result = array_to_pil(array)
        profile = image.info.get("icc_profile")
        if image.mode == "CMYK" and is_cmyk_profile(profile):
            return result  # its colours went through it into sRGB (untagged RGB is read as sRGB)
        if profile and not other_colour_space(profile, array.shape[2], "the image"):
            result.info["icc_profile"] = profile
        return result


def _named(image: Image.Image) -> str:
    """ " (its file name)" for a PIL image opened from a file, "" for one made in memory."""
    filename = getattr(image, "filename", "")  # an ImageFile's; an image made in memory has none
    return f" ({filename})" if filename else ""


def _warn_if_oriented(image: Image.Image) -> None:
    """One warning line where `image` carries an EXIF orientation other than 1, which `upscale_pil` does not
    apply: the result would show turned or mirrored, silently (its EXIF, which said how to show it, is gone)."""
    from srfeat.data.orientation import EXIF_DAMAGE, exif_orientation

    try:
        orientation = exif_orientation(image.getexif())
    except EXIF_DAMAGE:  # a block PIL cannot read: no orientation that `ImageOps.exif_transpose` would apply
        return
    if orientation != 1:
        logger.warning(
            "the PIL image%s has EXIF orientation %d, not applied here: its pixels are upscaled as stored and the "
            "result has no EXIF, so it shows turned or mirrored; pass ImageOps.exif_transpose(image) to upscale "
            "it as viewers show it",
            _named(image),
            orientation,
        )
