"""Our image decoder against an independent implementation, `rosbags-image`, over every encoding both support.

Messages are built once as `rosbags` dataclasses (what bag2dataset decodes, after a real CDR round trip) and once
as rclpy messages (what the agent decodes, through lewm_ros.ros.image_codec); both must match rosbags-image.

Where the two libraries deliberately differ, the test pins the difference instead of hiding it:
- `8UC3` has no colour order: rosbags-image hands the channels back as stored; we read them as BGR (OpenCV's
  order), so ours is theirs with the channels reversed;
- `8UC1` cannot be converted to rgb8 by rosbags-image (a generic 1-channel type): ours is theirs replicated;
- `mono16` to 8 bits: rosbags-image scales by 255/65535 and truncates (v // 257), we keep the high byte (v >> 8):
  compared exactly against the raw 16-bit values theirs returns, and within 1 of their rgb8;
- depth (`16UC1` mm, `32FC1` m): rosbags-image returns the raw values; ours is metres with 0 mm -> NaN;
- encodings only rosbags-image decodes (Bayer, YUV, 16-bit colour, other generic types) are refused by ours with
  ImageDecodeError, never decoded wrongly: the agent uses rgb8/bgr8/mono/compressed cameras.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from bagkit import TS, compressed_image, raw_image
from rosbags.image import image_to_cvimage, message_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

from lewm_ros.data import image_decode
from lewm_ros.data.image_decode import COLOUR_ENCODINGS, DEPTH_ENCODINGS, ImageDecodeError
from lewm_ros.ros import image_codec

RNG = np.random.default_rng(11)
SHAPES = [(7, 5), (16, 16), (3, 33)]  # odd sizes catch stride mistakes
ONLY_THEIRS = ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "uyvy", "yuv422", "yuyv", "rgb16",
               "bgr16", "rgba16", "bayer_rggb16", "16SC1", "32SC1", "64FC1", "8UC2", "8UC4", "16UC3"]  # fmt: skip

# encoding -> (channels, dtype) of the stored pixels
STORED = {
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8), "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8), "mono16": (1, np.uint16), "8UC3": (3, np.uint8), "8UC1": (1, np.uint8),
    "16UC1": (1, np.uint16), "32FC1": (1, np.float32),
}  # fmt: skip


def stored_pixels(encoding: str, shape: tuple[int, int]) -> np.ndarray:
    channels, dtype = STORED[encoding]
    if dtype == np.float32:
        values = RNG.uniform(0.1, 5.0, (*shape, channels)).astype(np.float32)
        values[0, 0] = np.nan  # no reading
        return values
    high = np.iinfo(dtype).max + 1
    values = RNG.integers(0, high, (*shape, channels), dtype=np.int64).astype(dtype)
    if encoding == "16UC1":
        values[0, 0] = 0  # no reading
    return values


def cdr_round_trip(msg):
    """The message as a bag reader hands it back: serialised to CDR and deserialised by rosbags."""
    msgtype = type(msg).__msgtype__
    return TS.deserialize_cdr(TS.serialize_cdr(msg, msgtype), msgtype)


def rclpy_image(bag_msg) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding = bag_msg.height, bag_msg.width, bag_msg.encoding
    msg.is_bigendian, msg.step = bag_msg.is_bigendian, bag_msg.step
    msg.data = array.array("B", bytes(bag_msg.data))
    return msg


def rclpy_compressed(bag_msg) -> CompressedImage:
    msg = CompressedImage()
    msg.format = bag_msg.format
    msg.data = array.array("B", bytes(bag_msg.data))
    return msg


def test_the_encoding_lists_cover_every_encoding_we_decode():
    assert set(STORED) == set(COLOUR_ENCODINGS) | set(DEPTH_ENCODINGS)


BYTE_ORDERS = [(e, big) for e in STORED for big in (False, True) if big <= (STORED[e][1] != np.uint8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("encoding, bigendian", BYTE_ORDERS)  # byte order matters for multi-byte channels only
def test_raw_encodings_match_rosbags_image(encoding, bigendian, shape):
    stored = stored_pixels(encoding, shape)
    bag_msg = cdr_round_trip(raw_image(stored, encoding=encoding, bigendian=bigendian))
    theirs_raw = image_to_cvimage(bag_msg)  # their raw view, byte order handled by them
    native = stored.astype(stored.dtype.newbyteorder("="))
    np.testing.assert_array_equal(theirs_raw.reshape(native.shape), native)  # both read the same numbers

    for ours_msg, decode in ((bag_msg, image_decode), (rclpy_image(bag_msg), image_codec)):
        if encoding in DEPTH_ENCODINGS:
            ours = decode.image_to_depth(ours_msg)
            expected = theirs_raw.astype(np.float32) * (np.float32(0.001) if encoding == "16UC1" else 1)
            if encoding == "16UC1":
                expected[theirs_raw == 0] = np.nan
            np.testing.assert_array_equal(ours, expected.reshape(shape))
            continue
        ours = decode.image_to_rgb(ours_msg)
        assert ours.shape == (*shape, 3) and ours.dtype == np.uint8
        if encoding == "8UC3":
            np.testing.assert_array_equal(ours, theirs_raw[..., ::-1])  # we read 8UC3 as BGR; they keep it as is
        elif encoding == "8UC1":
            np.testing.assert_array_equal(ours, np.repeat(theirs_raw.reshape(*shape, 1), 3, axis=2))
        elif encoding == "mono16":
            np.testing.assert_array_equal(ours, np.repeat((theirs_raw >> 8).astype(np.uint8)[..., None], 3, axis=2))
            theirs_rgb = message_to_cvimage(bag_msg, "rgb8")
            assert np.abs(ours.astype(int) - theirs_rgb.astype(int)).max() <= 1  # v >> 8 vs v // 257
        else:
            np.testing.assert_array_equal(ours, message_to_cvimage(bag_msg, "rgb8"))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("shape", SHAPES)
def test_compressed_colour_matches_rosbags_image(fmt, shape):
    rgb = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    bag_msg = cdr_round_trip(compressed_image(rgb, fmt=fmt, quality=90))
    theirs = message_to_cvimage(bag_msg, "rgb8")
    for ours in (image_decode.to_rgb(bag_msg), image_codec.to_rgb(rclpy_compressed(bag_msg))):
        np.testing.assert_array_equal(ours, theirs)
    if fmt == "png":
        np.testing.assert_array_equal(theirs, rgb)  # lossless: both give back the original


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_compressed_grey_png_matches_rosbags_image(depth):
    grey = RNG.integers(0, np.iinfo(depth).max + 1, (9, 12), dtype=np.int64).astype(depth)
    ok, data = cv2.imencode(".png", grey)
    assert ok
    bag_msg = cdr_round_trip(TS.types["sensor_msgs/msg/CompressedImage"](
        header=raw_image(np.zeros((1, 1, 3), np.uint8)).header, format="png", data=data.reshape(-1)))  # fmt: skip
    theirs = message_to_cvimage(bag_msg)  # one 8-bit channel (OpenCV reduces 16-bit without IMREAD_ANYDEPTH)
    assert theirs.ndim == 2 and theirs.dtype == np.uint8
    np.testing.assert_array_equal(image_decode.to_rgb(bag_msg), np.repeat(theirs[..., None], 3, axis=2))


@pytest.mark.parametrize("encoding", ONLY_THEIRS)
def test_encodings_only_rosbags_image_decodes_are_refused_not_misread(encoding):
    data = np.zeros(4 * 4 * 8, np.uint8)
    msg = TS.types["sensor_msgs/msg/Image"](header=raw_image(np.zeros((1, 1, 3), np.uint8)).header, height=4,
                                             width=4, encoding=encoding, is_bigendian=0, step=data.size // 4,
                                             data=data)  # fmt: skip
    with pytest.raises(ImageDecodeError, match="unsupported image encoding"):
        image_decode.to_rgb(msg)
