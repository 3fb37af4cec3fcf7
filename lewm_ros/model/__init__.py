"""Pure-PyTorch LeWM: ViT encoder, AdaLN-zero predictor, SIGReg, bundles. ROS-free."""

from lewm_ros.model.config import LeWMConfig, preset
from lewm_ros.model.lewm import LeWM

__all__ = ["LeWM", "LeWMConfig", "preset"]
