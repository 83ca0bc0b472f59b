"""Image helpers shared by the ingestion pipelines, training and ``micar generate``.

The prepared shards hold lossless PNG bytes that are already resized and center-cropped the way
the model's transform does it (reference-model spec, section 10: shorter side to 232 with
bilinear antialiased resampling, center crop 224), so training only decodes and normalises.
``resize_center_crop`` reproduces torchvision's ``Resize(resize_size)`` + ``CenterCrop(image_size)``
on PIL images exactly (same output size arithmetic, same PIL resampling, same crop offsets).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Level 3 keeps encoding fast (the pipelines encode every image once) at a small size cost.
PNG_COMPRESS_LEVEL = 3


class ImageDecodeError(ValueError):
    """Bytes that are not a complete, readable image (``where`` says which file or row)."""


def decode_rgb(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes into a fully loaded RGB ``PIL.Image``.

    ``img.load()`` forces the whole pixel stream to be read, so truncated files fail here with
    an ``ImageDecodeError`` naming ``where`` instead of later inside a training worker.
    """
    if not data:
        raise ImageDecodeError(f"{where}: empty image data (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{where}: unreadable image (not a recognised image format; {len(data)} bytes)"
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(
            f"{where}: unreadable or truncated image ({type(exc).__name__}: {exc})"
        ) from exc


def resize_center_crop(img: Image.Image, resize_size: int, image_size: int) -> Image.Image:
    """Shorter side to ``resize_size`` (bilinear, antialiased), then a centred ``image_size`` crop.

    Matches torchvision's ``Resize(resize_size)`` then ``CenterCrop(image_size)`` on PIL input.
    """
    if resize_size < image_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_size, int(resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    return img.crop((left, top, left + image_size, top + image_size))


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG bytes of ``img`` (deterministic for a given image)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png_batch(images: Sequence[bytes], where: str = "image") -> np.ndarray:
    """PNG (or any encoded) bytes of equally sized images -> uint8 array ``[b, H, W, 3]``."""
    arrays = [np.asarray(decode_rgb(data, f"{where}[{i}]")) for i, data in enumerate(images)]
    return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` or ``[b, H, W, 3]`` -> float32 ``[b, 3, H, W]``, ImageNet-normalised.

    Scales to [0, 1] then applies the ImageNet mean / std as the model's transform does.
    """
    import torch

    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"normalize expects [H, W, 3] or [b, H, W, 3], got {tuple(x.shape)}")
    # [b, H, W, 3] -> [b, 3, H, W]
    x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
