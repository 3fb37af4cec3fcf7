"""Camera pixels from sensor_msgs/Image and CompressedImage fields, without ROS: numpy and OpenCV only.

The agent (through lewm_ros.ros.image_codec, which re-exports these functions) and rosbag2 conversion
(lewm_ros.data.bag_conversion, which decodes messages deserialised by `rosbags`) share this one decoder, so a
model is trained on exactly the pixels the robot will show it. Messages are duck-typed: any object with the
Image fields (height, width, encoding, is_bigendian, step, data) or the CompressedImage fields (format, data)
works, whether it is an rclpy message, a `rosbags` dataclass or a test's namespace. Decoding returns views of
the message buffer wherever the memory layout allows, because the camera callback runs at frame rate and copies
of 224x224x3 frames add up.

Conventions:
- colour output is HxWx3 uint8 RGB, the layout the LeWM encoder eats;
- `8UC3` carries no colour order; we read it as BGR, the order OpenCV (its usual producer) writes;
- mono images are replicated to three channels; `mono16` keeps its 8 most significant bits;
- depth (`16UC1` in millimetres, `32FC1` in metres, REP 118) decodes to float32 metres, with the
  "no reading" value (0 for 16UC1) mapped to NaN as 32FC1 already does.

Hostile input (the agent decodes whatever arrives on a camera topic, the converter whatever a bag holds):
every decode function raises `ImageDecodeError`, never a cv2.error or a numpy error, and never allocates for
a frame larger than `max_pixels` (keyword argument; default `MAX_PIXELS` = 4096*4096 = 16.7 Mpx, i.e. 50 MB of
RGB):
- raw Image: width*height is checked against max_pixels, and step*height against the data length,
  with Python integers before anything is allocated; the result is a view of the data or a copy no
  larger than three times the data (mono replicated to RGB);
- CompressedImage: only PNG and JPEG are decoded, recognised by their signature bytes. The size is read
  from the PNG IHDR chunk or the JPEG frame header (SOFn) before OpenCV sees the data, so a 1 kB file
  claiming 100000x100000 pixels is refused without decoding. Other formats OpenCV could decode (TIFF,
  WebP, BMP, PNM, ...) are refused: their headers are not checked here and ROS image_transport publishes
  only png and jpeg. A format string naming png or jpeg that disagrees with the data is refused, and so
  is a JPEG without its end-of-image marker or a PNG without IEND (truncated in transit).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

MAX_PIXELS = 4096 * 4096
"""Default bound on width*height of any decoded frame (16.7 Mpx): far above camera resolutions the
model eats (64-224 px), far below what exhausts a Jetson's memory."""


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


def _short(text: object, limit: int = 40) -> str:
    """repr() of an untrusted string, cut so a hostile value cannot flood the log."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 5] + "...'"


def _pixel_limit(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return max_pixels


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} declares {width}x{height} = {width * height:,} pixels, over max_pixels = {max_pixels:,} "
            "(pass a larger max_pixels if the camera really sends such frames)"
        )


def _layout(encoding: object) -> _Layout:
    layout = _LAYOUTS.get(encoding) if isinstance(encoding, str) else None
    if layout is not None:
        return layout
    hint = ""
    if isinstance(encoding, str):
        folded = {k.lower(): k for k in _LAYOUTS}.get(encoding.strip().strip("\x00").lower())
        if folded is not None:
            hint = f" (encodings are case-sensitive and exact; did you mean {folded!r}?)"
    raise ImageDecodeError(
        f"unsupported image encoding {_short(encoding)}{hint}; supported: {', '.join(_LAYOUTS)}"
    )


def _as_bytes(data: object, what: str) -> np.ndarray:
    """The message's byte buffer as a uint8 array, without copying it."""
    try:
        return np.frombuffer(data, dtype=np.uint8)  # type: ignore[call-overload]
    except (TypeError, ValueError, BufferError) as err:
        raise ImageDecodeError(f"{what}: data is not a byte buffer ({type(data).__name__}): {err}") from None


def image_to_array(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Raw pixels as an HxWxC array in native byte order; a view of `msg.data` when possible.

    Padded rows (step > width*channels*itemsize) are skipped with strides rather than copied. Sizes are
    checked (width*height <= max_pixels, step*height == len(data)) before anything is allocated.
    """
    limit = _pixel_limit(max_pixels)
    layout = _layout(msg.encoding)
    try:
        height, width, step = operator.index(msg.height), operator.index(msg.width), operator.index(msg.step)
    except TypeError as err:
        raise ImageDecodeError(f"image height/width/step must be integers: {err}") from None
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size: width={width} height={height}")
    _check_pixels(width, height, limit, f"{msg.encoding} image")
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} < width*channels*bytes = {width}*{layout.channels}*{itemsize} = {row_bytes} "
            f"for encoding {msg.encoding}"
        )
    if step % itemsize:
        raise ImageDecodeError(f"step {step} is not a multiple of the {itemsize}-byte pixel channel")
    buffer = _as_bytes(msg.data, f"{msg.encoding} image")
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


def image_to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB for any colour or mono encoding (see module docstring for conventions).

    rgb8 returns a read-only view of the message buffer; bgr8/8UC3 a reversed-channel view (negative
    stride: call np.ascontiguousarray before torch.from_numpy); other encodings a new array.
    """
    layout = _layout(msg.encoding)
    if layout.colour == "depth":
        raise ImageDecodeError(
            f"{msg.encoding} is a depth encoding; use image_to_depth, not image_to_rgb"
        )
    pixels = image_to_array(msg, max_pixels=max_pixels)
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


def image_to_depth(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxW float32 depth in metres from 16UC1 (millimetres) or 32FC1 (metres); invalid pixels are NaN."""
    layout = _layout(msg.encoding)
    if layout.colour != "depth":
        raise ImageDecodeError(
            f"{msg.encoding} is not a depth encoding; expected one of {', '.join(DEPTH_ENCODINGS)}"
        )
    raw = image_to_array(msg, max_pixels=max_pixels)[..., 0]
    if raw.dtype == np.uint16:
        depth = raw.astype(np.float32) * np.float32(0.001)
        depth[raw == 0] = np.nan
        return depth
    return raw.astype(np.float32, copy=False)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
# Start-of-frame markers carry the image size: every 0xC0..0xCF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field


def _png_size(data: memoryview, what: str) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec requires to come first."""
    if len(data) < 8 + 8 + 13:
        raise ImageDecodeError(f"{what}: truncated PNG ({len(data)} bytes, no complete IHDR header)")
    length = int.from_bytes(data[8:12], "big")
    if length != 13 or bytes(data[12:16]) != b"IHDR":
        raise ImageDecodeError(f"{what}: corrupt PNG: the first chunk is not a 13-byte IHDR")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ImageDecodeError(f"{what}: corrupt PNG: IHDR size {width}x{height} is outside 1..2^31-1")
    return width, height


def _jpeg_size(data: memoryview, what: str) -> tuple[int, int, int]:
    """(width, height, offset of the first scan) from the frame header, walking the marker segments."""
    pos, end = 2, len(data)
    size: tuple[int, int] | None = None
    while pos < end:
        if data[pos] != 0xFF:
            raise ImageDecodeError(f"{what}: corrupt JPEG: no marker at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise ImageDecodeError(f"{what}: corrupt JPEG: marker 0x{marker:02X} before the first scan")
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise ImageDecodeError(f"{what}: corrupt JPEG: segment 0x{marker:02X} has length {length}")
        if marker == 0xDA:
            if size is None:
                raise ImageDecodeError(f"{what}: corrupt JPEG: scan data before any frame header (SOFn)")
            return size[0], size[1], pos + length
        if marker in _JPEG_SOF and size is None:
            if length < 8:
                raise ImageDecodeError(f"{what}: corrupt JPEG: frame header of {length} bytes")
            if pos + 7 > end:
                break
            height = int.from_bytes(data[pos + 3 : pos + 5], "big")
            width = int.from_bytes(data[pos + 5 : pos + 7], "big")
            if width == 0 or height == 0:
                raise ImageDecodeError(f"{what}: JPEG frame header declares size {width}x{height}")
            size = (width, height)
        pos += length
    raise ImageDecodeError(f"{what}: truncated JPEG: the data ends before the first scan")


def _contains(data: np.ndarray, needle: bytes, start: int) -> bool:
    """Whether `needle` occurs in data[start:]; looks at the tail first, where end markers normally are."""
    tail = max(start, data.size - 64)
    return needle in data[tail:].tobytes() or needle in data[start:].tobytes()


def compressed_to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a png/jpeg CompressedImage to HxWx3 uint8 RGB with OpenCV, refusing oversized frames before
    decoding (see the module docstring for what is checked)."""
    limit = _pixel_limit(max_pixels)
    fmt_text = msg.format if isinstance(msg.format, str) else ""
    fmt = fmt_text.lower()
    what = f"compressed image (format {_short(fmt_text)})"
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressedDepth images are not supported (format {_short(fmt_text)})")
    data = _as_bytes(msg.data, what)
    if data.size == 0:
        raise ImageDecodeError(f"{what} has no data")
    view = memoryview(data)
    if bytes(view[:8]) == _PNG_SIGNATURE:
        actual = "png"
    elif bytes(view[:3]) == _JPEG_SOI:
        actual = "jpeg"
    else:
        raise ImageDecodeError(
            f"{what}: data is neither PNG nor JPEG (first bytes {bytes(view[:8])!r}); "
            "only png and jpeg are decoded"
        )
    named = {name for name, words in (("png", ("png",)), ("jpeg", ("jpeg", "jpg"))) if any(w in fmt for w in words)}
    if len(named) == 1 and actual not in named:
        raise ImageDecodeError(f"{what} names {named.pop()} but the data is {actual.upper()}")
    if actual == "png":
        width, height = _png_size(view, what)
        if not _contains(data, b"IEND", 33):
            raise ImageDecodeError(f"{what}: truncated PNG: no IEND chunk")
    else:
        width, height, scan = _jpeg_size(view, what)
        if not _contains(data, b"\xff\xd9", scan):
            raise ImageDecodeError(f"{what}: truncated JPEG: no end-of-image marker after the scan data")
    _check_pixels(width, height, limit, what)
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageDecodeError(f"{what}: OpenCV cannot decode {data.size} bytes: {_first_line(err)}") from None
    if bgr is None:
        raise ImageDecodeError(f"{what}: cannot decode {data.size} bytes as {actual} (corrupt or truncated)")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageDecodeError(f"{what}: OpenCV returned {bgr.shape} {bgr.dtype}, not HxWx3 uint8")
    _check_pixels(bgr.shape[1], bgr.shape[0], limit, what)  # what OpenCV produced, whatever the header said
    try:
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as err:
        raise ImageDecodeError(f"{what}: OpenCV colour conversion failed: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(err).__name__


RAW_FIELDS = ("height", "width", "encoding", "is_bigendian", "step", "data")
COMPRESSED_FIELDS = ("format", "data")


def is_compressed(msg: object) -> bool:
    """Whether `msg` looks like a CompressedImage (has format and data) rather than a raw Image."""
    return all(hasattr(msg, name) for name in COMPRESSED_FIELDS)


def to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB from either camera message type, told apart by their fields (duck typing), so
    rclpy messages and `rosbags` dataclasses decode alike."""
    if is_compressed(msg):
        return compressed_to_rgb(msg, max_pixels=max_pixels)
    if all(hasattr(msg, name) for name in RAW_FIELDS):
        return image_to_rgb(msg, max_pixels=max_pixels)
    raise ImageDecodeError(
        f"expected a sensor_msgs Image or CompressedImage (fields {', '.join(RAW_FIELDS)} or "
        f"{', '.join(COMPRESSED_FIELDS)}), got {type(msg).__name__}"
    )
