"""Image codec: every encoding, padded rows, endianness, zero-copy, and every bad-input case."""

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from lewm_ros.ros import image_codec as codec
from lewm_ros.ros.image_codec import ImageDecodeError

RNG = np.random.default_rng(0)


def raw_message(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Build an Image by hand (independent of the codec's encoder) with `pad` bytes after each row."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(bigendian)
    msg.step = padded.shape[1]
    msg.data = array.array("B", padded.tobytes())
    return msg


def random_rgb(h: int = 7, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", [0, 3, 16])
@pytest.mark.parametrize(
    "encoding, make_raw",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("8UC3", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
    ],
)
def test_colour_encodings_decode_to_rgb(encoding, make_raw, pad):
    rgb = random_rgb()
    decoded = codec.image_to_rgb(raw_message(make_raw(rgb), encoding, pad=pad))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_replicates_to_three_channels(encoding, pad):
    mono = RNG.integers(0, 256, (6, 9, 1), dtype=np.uint8)
    decoded = codec.image_to_rgb(raw_message(mono, encoding, pad=pad))
    np.testing.assert_array_equal(decoded, np.repeat(mono, 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_mono16_keeps_high_byte_both_endians(bigendian, pad):
    mono = RNG.integers(0, 65536, (5, 4, 1), dtype=np.uint16)
    msg = raw_message(mono, "mono16", pad=pad, bigendian=bigendian)
    np.testing.assert_array_equal(codec.image_to_array(msg), mono)
    np.testing.assert_array_equal(codec.image_to_rgb(msg), np.repeat((mono >> 8).astype(np.uint8), 3, 2))


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_16uc1_is_metres_with_nan_for_zero(bigendian):
    mm = RNG.integers(1, 10000, (4, 6, 1), dtype=np.uint16)
    mm[1, 2, 0] = 0
    depth = codec.image_to_depth(raw_message(mm, "16UC1", pad=2, bigendian=bigendian))
    assert depth.dtype == np.float32 and depth.shape == (4, 6)
    assert np.isnan(depth[1, 2])
    valid = mm[..., 0] != 0
    np.testing.assert_allclose(depth[valid], mm[..., 0][valid] / 1000.0, rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32fc1_passes_through(bigendian):
    metres = RNG.uniform(0.1, 5.0, (3, 8, 1)).astype(np.float32)
    metres[0, 0, 0] = np.nan
    depth = codec.image_to_depth(raw_message(metres, "32FC1", pad=4, bigendian=bigendian))
    np.testing.assert_array_equal(depth, metres[..., 0])


def test_rgb8_decode_is_zero_copy_view():
    msg = raw_message(random_rgb(), "rgb8", pad=8)
    decoded = codec.image_to_rgb(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))
    assert not decoded.flags.writeable  # a view must not let callers scribble on the message


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_encode_decode_round_trip(encoding):
    rgb = random_rgb(11, 13)
    msg = codec.rgb_to_image(rgb, encoding, frame_id="cam")
    assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (encoding, 13, 11, "cam")
    decoded = codec.image_to_rgb(msg)
    if encoding == "mono8":
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, 2))
    else:
        np.testing.assert_array_equal(decoded, rgb)


def test_png_round_trip_is_lossless_and_jpeg_is_close():
    rgb = random_rgb(32, 24)
    np.testing.assert_array_equal(codec.to_rgb(codec.rgb_to_compressed(rgb, "png")), rgb)
    smooth = cv2.GaussianBlur(rgb, (9, 9), 3)
    jpeg = codec.to_rgb(codec.rgb_to_compressed(smooth, "jpeg", quality=95))
    assert jpeg.shape == smooth.shape
    assert np.abs(jpeg.astype(int) - smooth.astype(int)).mean() < 4


def test_compressed_decodes_opencv_bgr_order_to_rgb():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    _, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = CompressedImage(format="png", data=array.array("B", png.tobytes()))
    decoded = codec.compressed_to_rgb(msg)
    assert decoded[0, 0].tolist() == [255, 0, 0]


# ---- bad input: one typed error whose message names the problem ---------------------------------


def test_unsupported_encoding():
    msg = raw_message(random_rgb(), "yuv422")
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'yuv422'"):
        codec.image_to_rgb(msg)


def test_data_length_mismatch():
    msg = raw_message(random_rgb(), "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(ImageDecodeError, match="data length"):
        codec.image_to_rgb(msg)


def test_step_too_small():
    msg = raw_message(random_rgb(4, 5), "rgb8")
    msg.step = 14
    with pytest.raises(ImageDecodeError, match="step 14 < width"):
        codec.image_to_rgb(msg)


def test_odd_step_for_16_bit():
    msg = raw_message(np.zeros((2, 3, 1), np.uint16), "mono16", pad=1)
    with pytest.raises(ImageDecodeError, match="multiple"):
        codec.image_to_rgb(msg)


@pytest.mark.parametrize("height, width", [(0, 5), (5, 0), (0, 0)])
def test_zero_size(height, width):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    with pytest.raises(ImageDecodeError, match="zero size"):
        codec.image_to_rgb(msg)


def test_depth_through_rgb_and_colour_through_depth_are_refused():
    with pytest.raises(ImageDecodeError, match="depth encoding"):
        codec.image_to_rgb(raw_message(np.zeros((2, 2, 1), np.float32), "32FC1"))
    with pytest.raises(ImageDecodeError, match="not a depth encoding"):
        codec.image_to_depth(raw_message(random_rgb(), "rgb8"))


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_undecodable_compressed_bytes(payload):
    msg = CompressedImage(format="jpeg", data=array.array("B", payload))
    with pytest.raises(ImageDecodeError, match="jpeg"):
        codec.compressed_to_rgb(msg)


def test_compressed_depth_is_refused_clearly():
    msg = CompressedImage(format="16UC1; compressedDepth png", data=array.array("B", b"\x00" * 20))
    with pytest.raises(ImageDecodeError, match="compressedDepth"):
        codec.compressed_to_rgb(msg)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)]
)
def test_encoder_rejects_non_rgb_arrays(bad):
    with pytest.raises(ValueError):
        codec.rgb_to_image(bad)
    with pytest.raises(ValueError):
        codec.rgb_to_compressed(bad)


def test_encoder_rejects_unknown_encoding():
    with pytest.raises(ValueError, match="cannot encode"):
        codec.rgb_to_image(random_rgb(), "yuv422")
