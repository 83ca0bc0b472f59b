"""micar.data.images: decoding with clear errors, the model's resize/crop, PNG, normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from rawfixtures import png

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


def test_decode_rgb_converts_and_loads():
    buf = io.BytesIO()
    Image.new("L", (7, 5), 128).save(buf, format="PNG")
    img = decode_rgb(buf.getvalue(), "x.png")
    assert img.mode == "RGB" and img.size == (7, 5)
    assert np.asarray(img)[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize(
    "data, expect",
    [
        (b"", "empty image data"),
        (b"not an image at all", "unreadable"),
        (png(1)[:60], "unreadable or truncated"),
    ],
)
def test_decode_rgb_names_where_on_bad_bytes(data, expect):
    with pytest.raises(ImageDecodeError, match=rf"images/case7.png: .*{expect}"):
        decode_rgb(data, "images/case7.png")


def test_decode_rgb_catches_truncated_jpeg():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(ImageDecodeError, match="row 3"):
        decode_rgb(buf.getvalue()[: len(buf.getvalue()) // 2], "row 3")


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (232, 240), (224, 224), (500, 233)])
def test_resize_center_crop_matches_torchvision(size):
    from torchvision import transforms

    img = Image.open(io.BytesIO(png(5, size))).convert("RGB")
    ref = transforms.Compose(
        [
            transforms.Resize(232, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(224),
        ]
    )(img)
    ours = resize_center_crop(img, 232, 224)
    assert ours.size == (224, 224)
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def test_resize_center_crop_rejects_resize_smaller_than_crop():
    with pytest.raises(ValueError, match="resize_size"):
        resize_center_crop(Image.new("RGB", (10, 10)), 8, 9)


def test_encode_png_is_lossless():
    img = Image.open(io.BytesIO(png(3))).convert("RGB")
    back = decode_rgb(encode_png(img), "roundtrip")
    assert np.array_equal(np.asarray(back), np.asarray(img))
    batch = decode_png_batch([encode_png(img), encode_png(img)])
    assert batch.shape == (2, 30, 40, 3) and batch.dtype == np.uint8


def test_normalize_values_and_shapes():
    hwc = np.zeros((4, 5, 3), dtype=np.uint8)
    hwc[..., 0] = 255
    x = normalize(hwc)
    assert x.shape == (1, 3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.full((4, 5), (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))
    assert torch.allclose(x[0, 2], torch.full((4, 5), -IMAGENET_MEAN[2] / IMAGENET_STD[2]))
    assert normalize(np.stack([hwc, hwc])).shape == (2, 3, 4, 5)
    with pytest.raises(TypeError):
        normalize(hwc.astype(np.float32))
