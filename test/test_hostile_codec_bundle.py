"""Hostile input to the image codec and the bundle loader (issue #14, parts 1 and 2).

Each case is something a camera topic or a bundle directory handed to the robot could hold. The promise
under test: one typed error (ImageDecodeError / BundleError) whose message names the problem, raised
before any allocation the input's size does not justify; never a cv2/numpy/torch/json exception.
"""

import argparse
import array
import json
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import torch
from sensor_msgs.msg import CompressedImage, Image

from lewm_ros.model.bundle import BundleError, load_bundle, read_meta, save_bundle
from lewm_ros.model.cli import model_info
from lewm_ros.model.config import PRESETS, ConfigError, LeWMConfig, preset
from lewm_ros.model.lewm import LeWM, count_parameters
from lewm_ros.ros import image_codec as codec
from lewm_ros.ros.image_codec import MAX_PIXELS, ImageDecodeError

# ---- building hostile images by hand -------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, idat: bytes, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def real_bilevel_png(side: int) -> bytes:
    """A valid side x side 1-bit greyscale PNG: a few kB that OpenCV would expand to side*side*3 bytes."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    return png_file(side, side, zlib.compress(row * side, 1), bit_depth=1, colour_type=0)


def encoded(ext: str, height: int = 48, width: int = 64) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    return data.tobytes()


def jpeg_with_size(width: int, height: int, sof: int = 0xC0) -> bytes:
    """A real JPEG whose frame header (SOFn) is rewritten to claim another size."""
    data = bytearray(encoded(".jpg"))
    pos = data.index(b"\xff\xc0")
    data[pos + 1] = sof
    data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def compressed(data: bytes, fmt: str = "png") -> CompressedImage:
    return CompressedImage(format=fmt, data=array.array("B", data))


def raw(height: int, width: int, encoding: str = "rgb8", step: int | None = None, data: bytes = b"") -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=width * 3 if step is None else step)
    msg.data = array.array("B", data)
    return msg


def raises_quickly_and_small(call, error, match: str, max_seconds: float = 1.0, max_bytes: int = 8 << 20):
    """`call` raises `error` matching `match` within max_seconds, with a Python/numpy heap peak under max_bytes."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            call()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < max_seconds, f"took {elapsed:.2f} s"
    assert peak < max_bytes, f"peak traced allocation {peak:,} bytes"


# ---- 1. codec: declared sizes beyond max_pixels are refused before decoding ----------------------


HUGE_COMPRESSED = {
    "png IHDR claims 100000x100000": lambda: png_file(100_000, 100_000, zlib.compress(b"\x00" * 64)),
    "png IHDR claims 2^31-1 x 1": lambda: png_file(2**31 - 1, 1, zlib.compress(b"\x00" * 64)),
    "real 12000x12000 png": lambda: real_bilevel_png(12_000),
    "real 4097x4097 png (just over the default)": lambda: real_bilevel_png(4097),
    "jpeg SOF0 claims 65535x65535": lambda: jpeg_with_size(65535, 65535),
    "progressive jpeg SOF2 claims 30000x30000": lambda: jpeg_with_size(30_000, 30_000, sof=0xC2),
}


@pytest.mark.parametrize("name", list(HUGE_COMPRESSED))
def test_compressed_claiming_a_huge_size_is_refused_before_decoding(name):
    data = HUGE_COMPRESSED[name]()
    fmt = "png" if data.startswith(b"\x89PNG") else "jpeg"
    msg = compressed(data, fmt)
    raises_quickly_and_small(lambda: codec.compressed_to_rgb(msg), ImageDecodeError, "max_pixels")
    raises_quickly_and_small(lambda: codec.to_rgb(msg), ImageDecodeError, "max_pixels")


@pytest.mark.parametrize(
    "height, width, encoding, step, data",
    [
        (2**31, 2**31 - 1, "rgb8", 0, b""),
        (2**32 - 1, 2**32 - 1, "32FC1", 2**32 - 1, b"\x00" * 16),
        (2**31, 1, "rgb8", 3, b"\x00" * 12),
        (1, 2**31, "mono8", 2**31, b"\x00" * 16),
        (5000, 5000, "mono8", 5000, b"\x00" * 64),
    ],
)
def test_raw_with_absurd_dimensions_never_allocates(height, width, encoding, step, data):
    msg = raw(height, width, encoding, step, data)
    decode = codec.image_to_depth if encoding == "32FC1" else codec.image_to_rgb
    raises_quickly_and_small(lambda: decode(msg), ImageDecodeError, "max_pixels")


def test_raw_max_pixels_applies_even_when_the_data_matches():
    side = 4097  # one row and column over 4096x4096; mono8 so the data is exactly width*height bytes
    msg = raw(side, side, "mono8", side, bytes(side * side))
    raises_quickly_and_small(lambda: codec.image_to_rgb(msg), ImageDecodeError, "max_pixels", max_bytes=1 << 20)


def test_max_pixels_is_configurable_on_every_decoder():
    assert MAX_PIXELS == 4096 * 4096
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    messages = [codec.rgb_to_compressed(rgb, "png"), codec.rgb_to_compressed(rgb, "jpeg"), codec.rgb_to_image(rgb)]
    for msg in messages:
        assert codec.to_rgb(msg, max_pixels=48 * 64).shape == (48, 64, 3)
        with pytest.raises(ImageDecodeError, match="max_pixels"):
            codec.to_rgb(msg, max_pixels=48 * 64 - 1)
    raw_msg = messages[2]
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        codec.image_to_array(raw_msg, max_pixels=100)
    depth = raw(48, 64, "32FC1", 64 * 4, bytes(48 * 64 * 4))
    assert codec.image_to_depth(depth, max_pixels=48 * 64).shape == (48, 64)
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        codec.image_to_depth(depth, max_pixels=100)
    # larger than the default is allowed when asked for
    big = real_bilevel_png(4097)
    assert codec.compressed_to_rgb(compressed(big), max_pixels=4097 * 4097).shape == (4097, 4097, 3)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100", None])
def test_max_pixels_itself_must_be_a_positive_int(bad):
    msg = codec.rgb_to_compressed(np.zeros((4, 4, 3), np.uint8), "png")
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        codec.compressed_to_rgb(msg, max_pixels=bad)


# ---- 1. codec: corrupt, truncated, mislabelled and foreign compressed data ------------------------


def _png() -> bytes:
    return encoded(".png")


def _jpeg() -> bytes:
    return encoded(".jpg")


CORRUPT_COMPRESSED = {
    "empty": (b"", "png", "no data"),
    "garbage text": (b"this is not an image at all", "png", "neither PNG nor JPEG"),
    "random bytes": (np.random.default_rng(3).bytes(500), "jpeg", "neither PNG nor JPEG"),
    "png signature only": (b"\x89PNG\r\n\x1a\n", "png", "truncated PNG"),
    "png cut inside IHDR": (_png()[:20], "png", "truncated PNG"),
    "png first chunk not IHDR": (b"\x89PNG\r\n\x1a\n" + png_chunk(b"tEXt", b"x" * 13) + b"\x00" * 20, "png", "IHDR"),
    "png IHDR zero width": (png_file(0, 10, zlib.compress(b"\x00" * 40)), "png", "1..2"),
    "png cut in half": (_png()[: len(_png()) // 2], "png", "truncated PNG"),
    "png without IEND": (_png()[:-12], "png", "truncated PNG"),
    "png with garbage IDAT": (png_file(8, 8, b"not zlib at all" * 4), "png", "cannot decode"),
    "png with too little IDAT": (png_file(64, 64, zlib.compress(b"\x00" * 10)), "png", "cannot decode"),
    "jpeg SOI only": (b"\xff\xd8\xff", "jpeg", "truncated JPEG"),
    "jpeg zero-length segment": (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "jpeg", "length 0"),
    "jpeg scan before frame header": (b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 30 + b"\xff\xd9", "jpeg", "SOFn"),
    "jpeg no marker after segment": (b"\xff\xd8\xff\xe0\x00\x04ab" + b"\x12\x34" * 10, "jpeg", "no marker"),
    "jpeg frame header claims 0 rows": (jpeg_with_size(64, 0), "jpeg", "0"),
    "jpeg cut in half": (_jpeg()[: len(_jpeg()) // 2], "jpeg", "truncated JPEG"),
    "jpeg without end-of-image": (_jpeg()[:-2], "jpeg", "truncated JPEG"),
    "jpeg cut inside the headers": (_jpeg()[:100], "jpeg", "truncated JPEG"),
}


@pytest.mark.parametrize("name", list(CORRUPT_COMPRESSED))
def test_corrupt_compressed_data_is_a_decode_error(name):
    data, fmt, reason = CORRUPT_COMPRESSED[name]
    with pytest.raises(ImageDecodeError, match=reason) as info:
        codec.compressed_to_rgb(compressed(data, fmt))
    assert f"format {fmt!r}" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("png", _jpeg(), "names png but the data is JPEG"),
        ("jpeg", _png(), "names jpeg but the data is PNG"),
        ("rgb8; jpeg compressed bgr8", _png(), "names jpeg but the data is PNG"),
        ("bgr8; png compressed bgr8", _jpeg(), "names png but the data is JPEG"),
    ],
)
def test_format_string_that_contradicts_the_data_is_refused(fmt, data, message):
    with pytest.raises(ImageDecodeError, match=message):
        codec.compressed_to_rgb(compressed(data, fmt))


@pytest.mark.parametrize(
    "jpeg_fmt, png_fmt",
    [("", ""), ("jpeg", "png"), ("JPEG", "PNG"), ("jpg", "png"), ("something", "something"),
     ("rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8")],
)  # fmt: skip
def test_format_strings_that_agree_or_say_nothing_still_decode(jpeg_fmt, png_fmt):
    assert codec.compressed_to_rgb(compressed(_jpeg(), jpeg_fmt)).shape == (48, 64, 3)
    assert codec.compressed_to_rgb(compressed(_png(), png_fmt)).shape == (48, 64, 3)


@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".webp", ".ppm"])
def test_formats_other_than_png_and_jpeg_are_refused(ext):
    data = encoded(ext)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV would take it
    with pytest.raises(ImageDecodeError, match="neither PNG nor JPEG"):
        codec.compressed_to_rgb(compressed(data, ext[1:]))


def _raise_cv2_error(*_args, **_kwargs):
    raise cv2.error("simulated OpenCV failure")


@pytest.mark.parametrize(
    "patch, match",
    [
        (("imdecode", _raise_cv2_error), "simulated OpenCV failure"),
        (("imdecode", lambda *_a, **_k: None), "cannot decode"),
        (("imdecode", lambda *_a, **_k: np.zeros((48, 64), np.uint8)), "not HxWx3 uint8"),
        (("imdecode", lambda *_a, **_k: np.zeros((48, 64, 4), np.uint8)), "not HxWx3 uint8"),
        (("imdecode", lambda *_a, **_k: np.zeros((48, 64, 3), np.uint16)), "not HxWx3 uint8"),
        (("imdecode", lambda *_a, **_k: np.zeros((5000, 5000, 3), np.uint8)), "max_pixels"),
        (("cvtColor", _raise_cv2_error), "simulated OpenCV failure"),
    ],
)
def test_every_opencv_failure_is_a_decode_error(monkeypatch, patch, match):
    monkeypatch.setattr(codec.cv2, *patch)
    with pytest.raises(ImageDecodeError, match=match):
        codec.compressed_to_rgb(compressed(_png(), "png"))


# ---- 1. codec: raw messages that lie ------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding, suggestion", [("RGB8", "rgb8"), ("Bgr8", "bgr8"), ("MONO16", "mono16"), ("8uc3", "8UC3"),
                             (" rgb8", "rgb8"), ("rgb8\x00", "rgb8"), ("32fc1", "32FC1")],
)  # fmt: skip
def test_encoding_in_the_wrong_case_gets_a_suggestion(encoding, suggestion):
    msg = raw(2, 2, encoding, 6, bytes(12))
    with pytest.raises(ImageDecodeError, match=f"did you mean '{suggestion}'"):
        codec.image_to_rgb(msg)
    with pytest.raises(ImageDecodeError, match=f"did you mean '{suggestion}'"):
        codec.image_to_depth(msg)


@pytest.mark.parametrize("encoding", ["x" * 100_000, "rgb8" * 5000, "\u00e9" * 3000])
def test_a_huge_encoding_string_does_not_flood_the_message(encoding):
    with pytest.raises(ImageDecodeError, match="unsupported image encoding") as info:
        codec.image_to_rgb(raw(2, 2, encoding, 6, bytes(12)))
    assert len(str(info.value)) < 300


def test_a_huge_format_string_does_not_flood_the_message():
    with pytest.raises(ImageDecodeError, match="neither PNG") as info:
        codec.compressed_to_rgb(compressed(b"garbage", "j" * 100_000))
    assert len(str(info.value)) < 300


def test_non_message_input_is_a_decode_error():
    with pytest.raises(ImageDecodeError, match="expected a sensor_msgs Image or CompressedImage"):
        codec.to_rgb(b"\x89PNG")  # type: ignore[arg-type]


# ---- 2. bundles ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile") / "tiny"
    save_bundle(LeWM(preset("tiny")).eval(), path, action_mean=[0.1, -0.2], action_std=[0.5, 2.0])
    return path


@pytest.fixture
def bundle(good_bundle, tmp_path):
    """A private copy of the tiny bundle to break."""
    return shutil.copytree(good_bundle, tmp_path / "bundle")


def edit_meta(path, edit) -> None:
    meta = json.loads((path / "model.json").read_text())
    edit(meta)
    (path / "model.json").write_text(json.dumps(meta))


def set_in(keys: str, value):
    """An edit setting meta[k1][k2]... = value, for keys 'k1.k2...'."""

    def edit(meta):
        *parents, last = keys.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def expect_bundle_error(path, match: str) -> BundleError:
    """load_bundle and read_meta both refuse with a one-line BundleError matching `match`."""
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)
    if (path / "model.json").is_file():
        try:
            read_meta(path)
        except BundleError as err:
            assert "\n" not in str(err)
    return info.value


MALFORMED_CONFIG = [
    # (field, value, message regex) -- floats, strings, bools, None, containers where ints belong
    ("encoder.patch_size", 0.5, r"config\.encoder\.patch_size: must be a positive int, got 0\.5"),
    ("encoder.patch_size", 16.0, r"config\.encoder\.patch_size: must be a positive int, got 16\.0"),
    ("encoder.patch_size", 0, r"config\.encoder\.patch_size: must be a positive int, got 0"),
    ("encoder.patch_size", 48, r"config\.encoder\.image_size: 64 is not a multiple of config\.encoder\.patch_size"),
    ("encoder.image_size", -64, r"config\.encoder\.image_size: must be a positive int"),
    ("encoder.image_size", "64", r"config\.encoder\.image_size: must be a positive int, got '64'"),
    ("encoder.width", True, r"config\.encoder\.width: must be a positive int, got True"),
    ("encoder.layers", None, r"config\.encoder\.layers: must be a positive int, got None"),
    ("encoder.heads", 0, r"config\.encoder\.heads: must be a positive int, got 0"),
    ("encoder.heads", 3, r"config\.encoder\.heads: .*not divisible"),
    ("encoder.mlp_dim", [64], r"config\.encoder\.mlp_dim: must be a positive int"),
    ("encoder.norm_eps", float("nan"), r"config\.encoder\.norm_eps: must be a finite number"),
    ("encoder.norm_eps", -1e-6, r"config\.encoder\.norm_eps: must be a finite number"),
    ("encoder.norm_eps", 0, r"config\.encoder\.norm_eps: must be > 0"),
    ("predictor.heads", 0, r"config\.predictor\.heads: must be a positive int"),
    ("predictor.dim_head", 1.5, r"config\.predictor\.dim_head: must be a positive int"),
    ("predictor.layers", -1, r"config\.predictor\.layers: must be a positive int"),
    ("predictor.history", 0, r"config\.predictor\.history: must be a positive int"),
    ("predictor.mlp_dim", {"a": 1}, r"config\.predictor\.mlp_dim: must be a positive int"),
    ("predictor.dropout", 1.5, r"config\.predictor\.dropout: must be a finite number in \[0, 1\)"),
    ("predictor.dropout", float("inf"), r"config\.predictor\.dropout: must be a finite number"),
    ("predictor.dropout", "0.1", r"config\.predictor\.dropout: must be a finite number"),
    ("action.frameskip", False, r"config\.action\.frameskip: must be a positive int, got False"),
    ("action.smoothed_dim", 0, r"config\.action\.smoothed_dim: must be a positive int"),
    ("action.mlp_scale", 4.0, r"config\.action\.mlp_scale: must be a positive int"),
    ("latent_dim", 0, r"config\.latent_dim: must be a positive int"),
    ("projector_hidden", "64", r"config\.projector_hidden: must be a positive int"),
    ("encoder", [1, 2], r"config\.encoder: must be an object"),
    ("action", "2x5", r"config\.action: must be an object"),
    ("config", "tiny", r"config: must be an object"),
    ("config", None, r"config: must be an object"),
    # sizes that pass the type checks but would allocate absurd models: refused by the parameter bound
    ("encoder.width", 10**30, r"config: the model would have .* parameters .* over the limit of 500,000,000"),
    ("encoder.layers", 10**6, r"parameters .* over the limit"),
    ("predictor.history", 10**12, r"parameters .* over the limit"),
    ("latent_dim", 10**400, r"parameters .* over the limit"),
    ("projector_hidden", 2**62, r"parameters .* over the limit"),
]


@pytest.mark.parametrize("field, value, match", MALFORMED_CONFIG,
                         ids=[f"{f}={v!r:.20}" for f, v, _ in MALFORMED_CONFIG])  # fmt: skip
def test_malformed_config_is_a_bundle_error_naming_the_field(bundle, field, value, match):
    edit_meta(bundle, set_in(field if field == "config" else f"config.{field}", value))
    start = time.perf_counter()
    expect_bundle_error(bundle, match)
    assert time.perf_counter() - start < 2.0  # refused from arithmetic, not after allocating


def test_config_validation_lives_in_the_config_for_every_path():
    good = preset("tiny").to_dict()
    with pytest.raises(ConfigError, match=r"config\.encoder\.patch_size: must be a positive int, got 0\.5"):
        LeWMConfig.from_dict({**good, "encoder": {**good["encoder"], "patch_size": 0.5}})
    with pytest.raises(ConfigError, match="over the limit of 1,000"):
        LeWMConfig.from_dict(good, max_parameters=1000)
    assert LeWMConfig.from_dict(good, max_parameters=None) == preset("tiny")
    with pytest.raises(ConfigError, match=r"config\.predictor\.history"):
        LeWMConfig(predictor=preset("tiny").predictor.__class__(history=0))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_estimate_is_exact_without_building_the_model(name):
    cfg = preset(name)
    assert cfg.parameter_estimate() == count_parameters(LeWM(cfg))


def test_model_over_the_parameter_bound_is_refused_before_allocation(bundle):
    # a consistent, well-typed config of ~1.2 billion parameters: width 4096, 6 layers of MLP 16384
    def edit(meta):
        meta["config"]["encoder"].update(width=4096, heads=16, mlp_dim=16384, layers=6)

    edit_meta(bundle, edit)
    with pytest.raises(ConfigError):
        LeWMConfig.from_dict(json.loads((bundle / "model.json").read_text())["config"])
    raises_quickly_and_small(lambda: load_bundle(bundle), BundleError, r"config: the model would have 1,")


# Peak resident memory of a fresh interpreter across load_bundle: torch's allocations are invisible to
# tracemalloc, so the measure is the process's own high-water mark (ru_maxrss, KiB on Linux).
LOAD_AND_MEASURE = """
import json, resource, sys
from lewm_ros.model.bundle import BundleError, expected_shapes, load_bundle
from lewm_ros.model.config import preset
expected_shapes(preset("tiny"))  # the meta-device machinery, warmed up outside the measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_bundle(sys.argv[1])
    message = None
except BundleError as err:
    message = str(err)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"message": message, "grew_mib": grew / 1024}))
"""


def test_a_config_claiming_sizes_its_weights_lack_is_refused_before_the_model_is_built(bundle):
    # a 2^21-wide projector: well-typed, under the parameter bound (281M), and 1.1 GB once built
    edit_meta(bundle, set_in("config.projector_hidden", 2**21))
    assert LeWMConfig.from_dict(json.loads((bundle / "model.json").read_text())["config"]).parameter_estimate() > 2.8e8
    done = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(bundle)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["message"] is not None and "config.projector_hidden = 2097152" in result["message"]
    assert "projector.fc1.weight has shape (64, 32) in weights.pt, the config needs (2097152, 32)" in result["message"]
    assert result["grew_mib"] < 100, result  # building the model first took 1.1 GB


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("format_version", True, "format version True is not supported"),
        ("format_version", 1.0, "format version 1.0 is not supported"),
        ("format_version", "1", "format version '1' is not supported"),
        ("image_size", "64", "image_size: must be a positive int, got '64'"),
        ("image_size", 64.0, "image_size: must be a positive int, got 64.0"),
        ("image_size", 32, "image_size 32 disagrees with the config's 64"),
        ("action_dim", True, "action_dim: must be a positive int, got True"),
        ("action_dim", 3, "action_dim 3 disagrees"),
        ("frameskip", 0, "frameskip: must be a positive int"),
        ("history", 4, "history 4 disagrees"),
        ("latent_dim", [32], "latent_dim: must be a positive int"),
    ],
)
def test_malformed_top_level_fields_are_named(bundle, field, value, match):
    edit_meta(bundle, set_in(field, value))
    expect_bundle_error(bundle, match)


NAN, INF = float("nan"), float("inf")
MALFORMED_NORMALISATION = [
    ("action_normalization", "x", r"action_normalization: must be an object"),
    ("action_normalization", [[0, 0], [1, 1]], r"action_normalization: must be an object"),
    ("action_normalization", None, r"action_normalization: must be an object"),
    ("action_normalization", {"mean": [0, 0]}, r"action_normalization\.std: must be a list of action_dim = 2"),
    ("action_normalization.mean", "ab", r"action_normalization\.mean: must be a list of action_dim = 2"),
    ("action_normalization.mean", {"0": 1}, r"action_normalization\.mean: must be a list"),
    ("action_normalization.std", [1.0], r"action_normalization\.std: must be a list of action_dim = 2 .*got \[1\.0\]"),
    ("action_normalization.std", [1.0] * 1000, r"action_normalization\.std: .*got a list of length 1000"),
    ("action_normalization.std", [[1.0, 1.0]], r"action_normalization\.std: must be a list"),
    ("action_normalization.std", [1.0, [1.0]], r"action_normalization\.std\[1\]: must be a number"),
    ("action_normalization.std", [1.0, "1"], r"action_normalization\.std\[1\]: must be a number"),
    ("action_normalization.std", [True, 1.0], r"action_normalization\.std\[0\]: must be a number, got True"),
    ("action_normalization.std", [1.0, NAN], r"action_normalization\.std\[1\]: must be finite and positive"),
    ("action_normalization.std", [INF, 1.0], r"action_normalization\.std\[0\]: must be finite and positive"),
    ("action_normalization.std", [1.0, -1.0], r"action_normalization\.std\[1\]: must be finite and positive"),
    ("action_normalization.std", [0, 1.0], r"action_normalization\.std\[0\]: must be finite and positive"),
    ("action_normalization.std", [1e39, 1.0], r"action_normalization\.std\[0\]: .*as float32"),
    ("action_normalization.std", [1e-50, 1.0], r"action_normalization\.std\[0\]: .*as float32"),
    ("action_normalization.std", [10**400, 1.0], r"action_normalization\.std\[0\]: must be finite"),
    ("action_normalization.mean", [NAN, 0.0], r"action_normalization\.mean\[0\]: must be finite"),
    ("action_normalization.mean", [0.0, -INF], r"action_normalization\.mean\[1\]: must be finite"),
    ("action_normalization.mean", [None, 0.0], r"action_normalization\.mean\[0\]: must be a number"),
]


@pytest.mark.parametrize("field, value, match", MALFORMED_NORMALISATION,
                         ids=[f"{f.split('.')[-1]}={v!r:.24}" for f, v, _ in MALFORMED_NORMALISATION])  # fmt: skip
def test_malformed_action_normalisation_is_named(bundle, field, value, match):
    edit_meta(bundle, set_in(field, value))
    expect_bundle_error(bundle, match)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format_version": 1, "config": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001, "nested too deeply"),
        ('{"format_version": 1, "image_size": ' + "9" * 5000 + "}", "corrupt JSON"),
        ('{"format_version": 1}' + " " * (1 << 20), "limit"),
        (b"\xff\xfe{\x00}\x00", "corrupt JSON"),
        ("", "corrupt JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("null", "expected a JSON object"),
    ],
    ids=["deep-list", "deep-config", "5000-digit-int", "over-1MiB", "utf16", "empty", "list", "null"],
)
def test_unparseable_model_json_is_a_bundle_error(bundle, text, match):
    target = bundle / "model.json"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    expect_bundle_error(bundle, match)


# ---- 2. bundles: weights.pt ---------------------------------------------------------------------


def rewrite_weights(path, edit, **save_kwargs) -> None:
    state = torch.load(path / "weights.pt", weights_only=True)
    edit(state)
    torch.save(state, path / "weights.pt", **save_kwargs)


QKV = "encoder.blocks.0.qkv.weight"
RUNNING_VAR = "projector.bn.running_var"
MALFORMED_WEIGHTS = {
    "entry is an int": (lambda s: s.__setitem__(QKV, 3), rf"entry '{QKV}' is a int, not a tensor"),
    "entry is a list": (lambda s: s.__setitem__(QKV, [1.0, 2.0]), rf"entry '{QKV}' is a list, not a tensor"),
    "entry is a string": (lambda s: s.__setitem__(QKV, "weights"), rf"entry '{QKV}' is a str"),
    "entry is a dict": (lambda s: s.__setitem__(QKV, {"w": torch.zeros(1)}), rf"entry '{QKV}' is a dict"),
    "entry is None": (lambda s: s.__setitem__(QKV, None), rf"entry '{QKV}' is a NoneType"),
    "non-string key": (lambda s: s.__setitem__(7, torch.zeros(1)), "entry key 7 is not a string"),
    "NaN weight": (lambda s: s[QKV].view(-1).__setitem__(5, NAN), rf"entry '{QKV}' holds non-finite"),
    "inf weight": (lambda s: s[QKV].view(-1).__setitem__(0, INF), rf"entry '{QKV}' holds non-finite"),
    "NaN running mean": (lambda s: s["projector.bn.running_mean"].fill_(NAN), "running_mean' holds non-finite"),
    "negative running var": (lambda s: s[RUNNING_VAR].__setitem__(0, -1.0), "running_var' holds negative"),
    "int tensor in a float slot": (lambda s: s.__setitem__(QKV, s[QKV].to(torch.int32)), "dtype torch.int32"),
    "complex tensor": (lambda s: s.__setitem__(QKV, s[QKV].to(torch.complex64)), "dtype torch.complex64"),
    "float step counter": (
        lambda s: s.__setitem__("projector.bn.num_batches_tracked", torch.tensor(1.5)), "num_batches_tracked"
    ),
    "sparse tensor": (lambda s: s.__setitem__(QKV, s[QKV].to_sparse()), "not a dense one"),
    "16 MB extra tensor": (lambda s: s.__setitem__("extra", torch.zeros(4_000_000)), "larger than"),
}


@pytest.mark.parametrize("name", list(MALFORMED_WEIGHTS))
def test_malformed_weights_are_refused_naming_the_entry(bundle, name):
    edit, match = MALFORMED_WEIGHTS[name]
    rewrite_weights(bundle, edit)
    expect_bundle_error(bundle, match)


@pytest.mark.parametrize(
    "name, write, match",
    [
        ("legacy pickle format", lambda p: rewrite_weights(p, lambda s: None, _use_new_zipfile_serialization=False),
         "not a zip archive"),
        ("empty file", lambda p: (p / "weights.pt").write_bytes(b""), "corrupt or unreadable"),
        ("garbage", lambda p: (p / "weights.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100), "corrupt or unreadable"),
        ("a tensor, not a dict", lambda p: torch.save(torch.zeros(3), p / "weights.pt"), "expected a state dict"),
        ("a directory", lambda p: ((p / "weights.pt").unlink(), (p / "weights.pt").mkdir()), "missing weights"),
    ],
)  # fmt: skip
def test_unreadable_weights_files(bundle, name, write, match):
    write(bundle)
    expect_bundle_error(bundle, match)


def test_compressed_zip_weights_are_refused_before_torch_reads_them(bundle):
    import zipfile

    weights = bundle / "weights.pt"
    with zipfile.ZipFile(weights) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(weights, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name, payload in entries:
            dst.writestr(name, payload)
    expect_bundle_error(bundle, "compressed entries")


@pytest.mark.parametrize(
    "which, damage, match",
    [
        ("encoder", lambda f: f.unlink(), r"missing encoder\.ts"),
        ("encoder", lambda f: f.write_bytes(b""), "cannot load TorchScript"),
        ("encoder", lambda f: f.write_bytes(b"\x00" * 1000), "cannot load TorchScript"),
        ("encoder", lambda f: f.write_bytes(f.read_bytes()[:2000]), "cannot load TorchScript"),
        ("predictor", lambda f: f.write_bytes(b"PK\x03\x04garbage"), "cannot load TorchScript"),
        ("predictor", lambda f: (f.unlink(), f.mkdir()), r"missing predictor\.ts"),
    ],
)
def test_torchscript_failures_are_bundle_errors(bundle, which, damage, match):
    loaded = load_bundle(bundle)
    damage(bundle / f"{which}.ts")
    with pytest.raises(BundleError, match=match) as info:
        loaded.load_torchscript(which)
    assert "\n" not in str(info.value)


def test_unknown_torchscript_name_is_a_clear_value_error(good_bundle):
    with pytest.raises(ValueError, match="which must be one of"):
        load_bundle(good_bundle).load_torchscript("decoder")


def test_a_good_bundle_still_loads(good_bundle):
    loaded = load_bundle(good_bundle)
    assert loaded.config == preset("tiny")
    np.testing.assert_allclose(loaded.action_std, [0.5, 2.0])
    assert read_meta(good_bundle)["action_dim"] == 2


# ---- 2. model-info: one line on stderr, exit 2 ---------------------------------------------------


MODEL_INFO_CASES = {
    "patch size zero": lambda p: edit_meta(p, set_in("config.encoder.patch_size", 0)),
    "patch size float": lambda p: edit_meta(p, set_in("config.encoder.patch_size", 0.5)),
    "NaN std": lambda p: edit_meta(p, set_in("action_normalization.std", [NAN, 1.0])),
    "normalisation a string": lambda p: edit_meta(p, set_in("action_normalization", "x")),
    "deep JSON": lambda p: (p / "model.json").write_text("[" * 100_000),
    "huge int": lambda p: (p / "model.json").write_text('{"format_version": ' + "1" * 5000 + "}"),
    "weight not a tensor": lambda p: rewrite_weights(p, lambda s: s.__setitem__(QKV, 3)),
    "truncated weights": lambda p: (p / "weights.pt").write_bytes((p / "weights.pt").read_bytes()[:300]),
    "missing directory": lambda p: shutil.rmtree(p),
}


@pytest.mark.parametrize("name", list(MODEL_INFO_CASES))
def test_model_info_on_a_bad_bundle_prints_one_line(bundle, capsys, name):
    MODEL_INFO_CASES[name](bundle)
    code = model_info(argparse.Namespace(model=str(bundle)))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_model_info_on_a_good_bundle_still_works(good_bundle, capsys):
    assert model_info(argparse.Namespace(model=str(good_bundle))) == 0
    out, err = capsys.readouterr()
    assert "total" in out and err == ""
