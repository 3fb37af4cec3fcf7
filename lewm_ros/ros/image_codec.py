"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is not installable from PyPI (and its stale wheel breaks on numpy 2), so the agent decodes
camera messages itself. Decoding lives in the ROS-free `lewm_ros.data.image_decode` (conventions, hostile-input
guarantees and `max_pixels` are described there) and is re-exported here unchanged: rosbag2 conversion decodes
bag messages with the very same functions, so training sees exactly what the agent sees. This module adds what
needs the ROS message classes: building Image and CompressedImage messages from RGB arrays.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from lewm_ros.data.image_decode import (
    COLOUR_ENCODINGS,
    DEPTH_ENCODINGS,
    MAX_PIXELS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_array,
    image_to_depth,
    image_to_rgb,
    is_compressed,
    to_rgb,
)

__all__ = [
    "COLOUR_ENCODINGS", "DEPTH_ENCODINGS", "ENCODABLE", "MAX_PIXELS", "ImageDecodeError", "compressed_to_rgb",
    "image_to_array", "image_to_depth", "image_to_rgb", "is_compressed", "rgb_to_compressed", "rgb_to_image",
    "to_rgb",
]  # fmt: skip

ENCODABLE = ("rgb8", "bgr8", "mono8")


def _check_rgb(pixels: np.ndarray) -> None:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got shape {pixels.shape} dtype {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"image has zero size: {pixels.shape}")


def rgb_to_image(
    pixels: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp: Time | None = None
) -> Image:
    """Build an Image message from HxWx3 uint8 RGB, in rgb8, bgr8 or mono8 (luma)."""
    _check_rgb(pixels)
    if encoding == "rgb8":
        out = pixels
    elif encoding == "bgr8":
        out = pixels[..., ::-1]
    elif encoding == "mono8":
        out = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"cannot encode to {encoding!r}; supported: {', '.join(ENCODABLE)}")
    out = np.ascontiguousarray(out)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(out.shape[0]), int(out.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(out.strides[0])
    msg.data = array.array("B", out.tobytes())
    return msg


def rgb_to_compressed(
    pixels: np.ndarray, fmt: str = "jpeg", quality: int = 90, frame_id: str = "", stamp: Time | None = None
) -> CompressedImage:
    """Build a jpeg or png CompressedImage from HxWx3 uint8 RGB."""
    _check_rgb(pixels)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), pixels[..., ::-1], params)
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {pixels.shape} image as {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = array.array("B", encoded.tobytes())
    return msg
