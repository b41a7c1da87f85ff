"""Decoding: 16-bit grey keeps its contrast; an image of another size is named by row and size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sslsweep.data.decode import decode_images
from tests.conftest import encode_png, make_images


def _png16(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")  # a 16-bit grey PNG
    return buf.getvalue()


def test_sixteen_bit_grey_images_are_scaled_not_clipped() -> None:
    """A 16-bit grey PNG spans 0..65535: decoded to uint8 it must keep its contrast (value / 257),
    where Pillow's own conversion clips everything above 255 to white."""
    ramp = np.linspace(0, 65535, 64).reshape(8, 8)
    out = decode_images([_png16(ramp)], None, source="x", workers=1)
    assert out.shape == (1, 1, 8, 8) and out.dtype == np.uint8
    assert np.array_equal(out[0, 0], np.round(ramp / 257).astype(np.uint8))


def test_an_image_of_another_size_is_named_by_its_row_and_size() -> None:
    """Row 2 is 10x10 among 8x8 images: the error names row 2 and both sizes (not row 0 as 'not a
    decodable image'). Across chunks too: 256 small rows, then 256 large ones (two chunks)."""
    images, _ = make_images(4, channels=1)
    odd, _ = make_images(1, size=10, channels=1)
    small, large = encode_png(images[0]), encode_png(odd[0])
    with pytest.raises(ValueError, match=r"^x: row 2 has size 10x10 \(1 channels\), unlike row 0's 8x8 \(1\); "
                                         r"set dataset.image_size"):
        decode_images([small, small, large, small], None, source="x", workers=1)
    with pytest.raises(ValueError, match=r"^x: row 256 has size 10x10 \(1 channels\), unlike row 0's 8x8"):
        decode_images([small] * 256 + [large] * 256, None, source="x", workers=2)
