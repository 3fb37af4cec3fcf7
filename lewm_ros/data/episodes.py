"""The HDF5 episode store: one file of many episodes, written by simulation and rosbag2 conversion,
read by training-window sampling and evaluation. The layout is specified in docs/data_format.md.

The store lives in episode_format (layout, attributes, errors, records), episode_writer, episode_reader,
episode_validation and episode_chunks (bounded-memory frame decoding); this module gathers their public names
for callers that use the store as a whole.

Frames of all episodes are concatenated along the first axis of the per-frame datasets; the
`episodes/` group says where each episode starts and how long it is. Row k of an episode holds
observation k and the action applied after it, so the last row of every episode has no action: its
action is NaN.

Writers only ever extend a file, and update the episode index after the frames it points at: a reader
trusts `episodes/start` and `episodes/length`, and frames past the last indexed episode (a write that
was cut short) are ignored and trimmed on close.

Files and arguments are treated as untrusted: whatever is wrong with them surfaces as `DatasetError`
(never a raw h5py/numpy exception), a writer refuses data before touching the file, and validation
reads in blocks bounded by bytes, so a hostile file cannot make us allocate much more than one frame.
"""

from lewm_ros.data.episode_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_DIM,
    MAX_IMAGE_SIDE,
    REQUIRED_ATTRIBUTES,
    ROW_DATASETS,
    DatasetError,
    DatasetIndexError,
    DatasetSummary,
    DatasetTypeError,
    Episode,
    attributes_json,
)
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.data.episode_writer import EpisodeWriter

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "MAX_DIM", "MAX_IMAGE_SIDE", "REQUIRED_ATTRIBUTES", "ROW_DATASETS",
    "DatasetError", "DatasetIndexError", "DatasetSummary", "DatasetTypeError", "Episode", "EpisodeReader",
    "EpisodeWriter", "attributes_json", "validate",
]  # fmt: skip
