"""Pure-PyTorch LeWM: ViT encoder, AdaLN-zero predictor, SIGReg, bundles. ROS-free.

Names are resolved lazily (PEP 562) so `lewm-ros collect --help` and friends do not pay for importing torch.
"""

from typing import Any

_EXPORTS = {"LeWM": "lewm_ros.model.lewm", "LeWMConfig": "lewm_ros.model.config", "preset": "lewm_ros.model.config"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lewm_ros.model' has no attribute {name!r}")
