"""Fitting camera frames to the model's square input, shared by the agent and bag conversion so training sees
exactly what the robot sees.

Policies (`image_policy`):
- `crop`: centre-crop to a square, then resize (keeps the aspect ratio; a 640x480 camera loses the sides);
- `resize`: stretch to the square (keeps the whole field of view, distorts it);
- `exact`: only frames already at the model's size are accepted (anything else is an error the caller drops).
Resizing uses area interpolation when shrinking (anti-aliased, what a downscaled training set looks like) and
linear when enlarging.
"""

from __future__ import annotations

import cv2
import numpy as np

IMAGE_POLICIES = ("crop", "resize", "exact")


class FrameSizeError(ValueError):
    """A frame the policy cannot turn into a model input."""


def fit_frame(pixels: np.ndarray, size: int, policy: str = "crop") -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8 RGB, contiguous."""
    if policy not in IMAGE_POLICIES:
        raise ValueError(f"image policy must be one of {IMAGE_POLICIES}, got {policy!r}")
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise FrameSizeError(f"expected an (H, W, 3) uint8 frame, got {pixels.shape} {pixels.dtype}")
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(pixels)
    if policy == "exact":
        raise FrameSizeError(f"frame is {width}x{height}, the model takes {size}x{size} (image_policy exact)")
    if policy == "crop" and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top : top + side, left : left + side]
    shrinking = pixels.shape[0] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(pixels), (size, size), interpolation=interpolation)
