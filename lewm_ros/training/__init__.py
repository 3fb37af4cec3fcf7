"""Training support for `lewm_ros.train`: checkpoints, run monitoring, evaluation on validation windows."""
