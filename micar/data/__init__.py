"""Prepared-data helpers: image decoding / resizing / normalisation shared by pipelines and training."""

from micar.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    decode_png_batch,
    decode_rgb,
    encode_png,
    normalize,
    resize_center_crop,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDecodeError",
    "decode_png_batch",
    "decode_rgb",
    "encode_png",
    "normalize",
    "resize_center_crop",
]
