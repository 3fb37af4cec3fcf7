"""The picture an operator watches: camera beside goal, with the controller's state written on it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PANEL = 256  # pixels per side of each panel
YELLOW = (255, 255, 0)


def debug_view(frame: np.ndarray | None, goal: np.ndarray | None, lines: Sequence[str]) -> np.ndarray:
    """(256, 512, 3) uint8: `frame` and `goal` (black when missing) side by side, `lines` over the camera."""
    import cv2

    blank = np.zeros((PANEL, PANEL, 3), np.uint8)
    panels = [blank if p is None else cv2.resize(p, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
              for p in (frame, goal)]  # fmt: skip
    view = np.ascontiguousarray(np.concatenate(panels, axis=1))
    for i, text in enumerate(lines):
        cv2.putText(view, text, (6, 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, YELLOW, 1, cv2.LINE_AA)
    cv2.putText(view, "goal", (PANEL + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, YELLOW, 1, cv2.LINE_AA)
    return view
