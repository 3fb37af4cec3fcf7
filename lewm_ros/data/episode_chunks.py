"""Reading stored frames within a memory bound: row blocks bounded by bytes, and one-frame chunks decoded from
their raw bytes so that a corrupt chunk or a compression bomb is a named problem, never a frame-sized surprise.

The reader decodes frames it returns this way; validation checks every frame this way without keeping any.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator

import h5py

from lewm_ros.data.episode_format import H5_ERRORS, DatasetError

READ_BLOCK_BYTES = 64 << 20  # validation reads at most this much per read (at least one row)
_INFLATE_PIECE = 1 << 20  # bytes inflated at a time when checking a compressed frame


def row_blocks(total: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """Row ranges [begin, end) covering `total` rows, each at most READ_BLOCK_BYTES (but at least one row):
    bounded by bytes, not rows, so that huge frames are read one at a time."""
    step = max(1, READ_BLOCK_BYTES // max(1, row_bytes))
    for begin in range(0, total, step):
        yield begin, min(begin + step, total)


def one_frame_chunks(dataset: h5py.Dataset) -> bool | None:
    """Whether a dataset stored one frame per chunk (the layout our writer makes) is deflated; None for any
    other layout, which is then read through h5py."""
    if dataset.chunks != (1, *dataset.shape[1:]):
        return None
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters in ([], [h5py.h5z.FILTER_DEFLATE]):
        return bool(filters)
    return None


def decoded_chunk(raw: bytes, filter_mask: int, deflate: bool, frame_bytes: int, *,
                  keep: bool) -> tuple[bytes, str | None]:  # fmt: skip
    """One frame from its raw chunk (as `read_direct_chunk` returns it) and what is wrong with it, if anything.

    With `keep` the frame's bytes come back (never inflated past `frame_bytes`); without, the stream is only
    counted piecewise and b"" comes back, so checking a huge frame needs no frame-sized buffer.
    """
    if not deflate or filter_mask & 1:  # bit 0 set: HDF5 stored this chunk uncompressed
        data, size, problem = raw, len(raw), None
    elif keep:
        data, problem = _inflate_frame(raw, frame_bytes)
        size = len(data)
    else:
        data = b""
        size, problem = _inflated_size(raw, frame_bytes)
    if problem is None and size != frame_bytes:
        problem = f"it decodes to {size} bytes, a frame has {frame_bytes}"
    return data, problem


def decode_frames(dataset: h5py.Dataset, rows: int, fail: Callable[[str], DatasetError]) -> None:
    """Decode every frame of the first `rows` rows, so a corrupt chunk is found now, not mid-training.

    One-frame chunks, deflated or not (what our writer makes), are checked from their raw bytes: the
    stream is inflated piecewise and only counted, so a huge frame (or a compression bomb) never needs a
    frame-sized buffer. Other layouts go through h5py in blocks of at most READ_BLOCK_BYTES (one frame at
    least).
    """
    frame_shape = dataset.shape[1:]
    frame_bytes = math.prod(frame_shape) * dataset.dtype.itemsize
    deflate = one_frame_chunks(dataset)
    if deflate is None:
        for begin, end in row_blocks(rows, frame_bytes):
            try:
                dataset[begin:end]
            except H5_ERRORS as error:
                raise fail(
                    f"{dataset.name} rows {begin}..{end - 1} cannot be decoded: corrupt chunk ({error})"
                ) from error
        return
    origin = (0,) * len(frame_shape)
    for row in range(rows):
        try:
            filter_mask, raw = dataset.id.read_direct_chunk((row, *origin))
        except H5_ERRORS as error:
            raise fail(f"{dataset.name} frame {row} cannot be read: corrupt or missing chunk ({error})") from error
        _, problem = decoded_chunk(raw, filter_mask, deflate, frame_bytes, keep=False)
        if problem:
            raise fail(f"{dataset.name} frame {row} is a corrupt chunk: {problem}")


def _inflate_frame(raw: bytes, frame_bytes: int) -> tuple[bytes, str | None]:
    """A deflated frame, never inflating more than `frame_bytes` (a compression bomb cannot make us
    allocate more than one frame), and what is wrong with the stream, if anything."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, frame_bytes)
        if not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            return data, "it decodes to more than a frame"
    except zlib.error as error:
        return b"", f"zlib: {error}"
    if not inflater.eof:
        return data, "the compressed stream ends early"
    return data, None


def _inflated_size(raw: bytes, limit: int) -> tuple[int, str | None]:
    """Bytes a zlib stream inflates to (counting stops past `limit`) and what is wrong with it, if anything."""
    inflater = zlib.decompressobj()
    size = 0
    pending = raw
    try:
        while not inflater.eof and size <= limit:
            piece = inflater.decompress(pending, min(_INFLATE_PIECE, READ_BLOCK_BYTES))
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                break
            size += len(piece)
    except zlib.error as error:
        return size, f"zlib: {error}"
    if size <= limit and not inflater.eof:
        return size, "the compressed stream ends early"
    return size, None
