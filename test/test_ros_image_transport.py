"""Two real rclpy nodes exchange camera messages over Fast DDS on loopback; pixels survive intact."""

import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from lewm_ros.ros import image_codec as codec

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def exchange(context, msg_type, messages, timeout_s: float = 20.0):
    """Publish `messages` from one node and return what a second node received, in order."""
    camera = Node("fake_camera_publisher", context=context)
    agent = Node("image_listener", context=context)
    received = []
    publisher = camera.create_publisher(msg_type, "camera/image", RELIABLE)
    agent.create_subscription(msg_type, "camera/image", received.append, RELIABLE)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(camera)
    executor.add_node(agent)
    try:
        deadline = time.monotonic() + timeout_s
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert publisher.get_subscription_count() == 1, "subscriber never matched over DDS"
        for message in messages:
            publisher.publish(message)
        while len(received) < len(messages) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        camera.destroy_node()
        agent.destroy_node()
    assert len(received) == len(messages), f"received {len(received)} of {len(messages)}"
    return received


def test_raw_images_cross_dds_unchanged(ros_context):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    frames.append(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    sent = [
        codec.rgb_to_image(frames[0], "rgb8", frame_id="camera_optical"),
        codec.rgb_to_image(frames[1], "bgr8"),
        codec.rgb_to_image(frames[2], "rgb8"),
    ]
    received = exchange(ros_context, Image, sent)
    assert received[0].header.frame_id == "camera_optical"
    for frame, msg in zip(frames, received, strict=True):
        np.testing.assert_array_equal(codec.to_rgb(msg), frame)


def test_compressed_images_cross_dds_unchanged(ros_context):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    received = exchange(ros_context, CompressedImage, [codec.rgb_to_compressed(frame, "png")])
    assert received[0].format == "png"
    np.testing.assert_array_equal(codec.to_rgb(received[0]), frame)


@pytest.mark.parametrize("encoding", ["mono8"])
def test_mono_crosses_dds(ros_context, encoding):
    frame = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    sent = codec.rgb_to_image(frame, encoding)
    (received,) = exchange(ros_context, Image, [sent])
    np.testing.assert_array_equal(codec.image_to_rgb(received), codec.image_to_rgb(sent))
