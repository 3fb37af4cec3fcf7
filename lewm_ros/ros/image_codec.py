"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is not installable from PyPI (and its stale wheel breaks on numpy 2), so the agent decodes
camera messages itself. Decoding returns views of the message buffer wherever the memory layout
allows, because the camera callback runs at frame rate and copies of 224x224x3 frames add up.

Conventions:
- colour output is HxWx3 uint8 RGB, the layout the LeWM encoder eats;
- `8UC3` carries no colour order; we read it as BGR, the order OpenCV (its usual producer) writes;
- mono images are replicated to three channels; `mono16` keeps its 8 most significant bits;
- depth (`16UC1` in millimetres, `32FC1` in metres, REP 118) decodes to float32 metres, with the
  "no reading" value (0 for 16UC1) mapped to NaN as 32FC1 already does.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image


class ImageDecodeError(ValueError):
    """A camera message that cannot be turned into pixels; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str  # numpy dtype of one channel, native byte order
    colour: str  # how to reach RGB: rgb, bgr, rgba, bgra, mono, depth


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, "u1", "rgb"),
    "bgr8": _Layout(3, "u1", "bgr"),
    "rgba8": _Layout(4, "u1", "rgba"),
    "bgra8": _Layout(4, "u1", "bgra"),
    "mono8": _Layout(1, "u1", "mono"),
    "mono16": _Layout(1, "u2", "mono"),
    "8UC3": _Layout(3, "u1", "bgr"),
    "8UC1": _Layout(1, "u1", "mono"),
    "16UC1": _Layout(1, "u2", "depth"),
    "32FC1": _Layout(1, "f4", "depth"),
}
COLOUR_ENCODINGS = tuple(k for k, v in _LAYOUTS.items() if v.colour != "depth")
DEPTH_ENCODINGS = tuple(k for k, v in _LAYOUTS.items() if v.colour == "depth")
ENCODABLE = ("rgb8", "bgr8", "mono8")


def image_to_array(msg: Image) -> np.ndarray:
    """Raw pixels as an HxWxC array in native byte order; a view of `msg.data` when possible.

    Padded rows (step > width*channels*itemsize) are skipped with strides rather than copied.
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(_LAYOUTS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size: width={width} height={height}")
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} < width*channels*bytes = {width}*{layout.channels}*{itemsize} = {row_bytes} "
            f"for encoding {msg.encoding}"
        )
    if step % itemsize:
        raise ImageDecodeError(f"step {step} is not a multiple of the {itemsize}-byte pixel channel")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageDecodeError(
            f"data length {buffer.size} != step*height = {step}*{height} = {step * height}"
        )
    order = ">" if (msg.is_bigendian and itemsize > 1) else "<"
    typed = buffer.view(np.dtype(order + layout.dtype))
    pixels = np.lib.stride_tricks.as_strided(
        typed,
        shape=(height, width, layout.channels),
        strides=(step, layout.channels * itemsize, itemsize),
        writeable=False,
    )
    if order == ">" and itemsize > 1:
        pixels = pixels.astype(np.dtype(layout.dtype))  # byte swap needs a copy
    return pixels


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB for any colour or mono encoding (see module docstring for conventions).

    rgb8 returns a read-only view of the message buffer; bgr8/8UC3 a reversed-channel view (negative
    stride: call np.ascontiguousarray before torch.from_numpy); other encodings a new array.
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is not None and layout.colour == "depth":
        raise ImageDecodeError(
            f"{msg.encoding} is a depth encoding; use image_to_depth, not image_to_rgb"
        )
    pixels = image_to_array(msg)
    if layout.colour == "rgb":
        return pixels
    if layout.colour == "bgr":
        return pixels[..., ::-1]
    if layout.colour == "rgba":
        return pixels[..., :3]
    if layout.colour == "bgra":
        return pixels[..., 2::-1]
    mono = pixels[..., 0]
    if mono.dtype != np.uint8:
        mono = (mono >> 8).astype(np.uint8)
    return np.repeat(mono[..., None], 3, axis=2)


def image_to_depth(msg: Image) -> np.ndarray:
    """HxW float32 depth in metres from 16UC1 (millimetres) or 32FC1 (metres); invalid pixels are NaN."""
    layout = _LAYOUTS.get(msg.encoding)
    if layout is not None and layout.colour != "depth":
        raise ImageDecodeError(
            f"{msg.encoding} is not a depth encoding; expected one of {', '.join(DEPTH_ENCODINGS)}"
        )
    raw = image_to_array(msg)[..., 0]
    if raw.dtype == np.uint16:
        depth = raw.astype(np.float32) * np.float32(0.001)
        depth[raw == 0] = np.nan
        return depth
    return raw.astype(np.float32, copy=False)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to HxWx3 uint8 RGB with OpenCV."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressedDepth images are not supported (format {msg.format!r})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError(f"compressed image (format {msg.format!r}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(
            f"cannot decode {data.size} compressed bytes (format {msg.format!r}) as jpeg or png"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """HxWx3 uint8 RGB from either camera message type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


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
