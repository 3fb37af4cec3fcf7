"""Training windows over HDF5 episode files: `history + 1` frames `frameskip` env steps apart and the
`history` action blocks between them, split into train/validation by episode, batched without Python work
per sample.

A window starting at row t of an episode holds frames t, t+fs, ..., t+H*fs (H = history, fs = frameskip)
and, for k < H, block k = the actions of rows t+k*fs .. t+(k+1)*fs-1 flattened step-major into
fs*action_dim values: the block that leaves frame k (docs/model.md). Every row with a full window ahead
is a start, so windows overlap.

Episodes are held as uint8 pixels in RAM when they fit the memory budget (loaded once); otherwise they are
grouped into shards that each fit, and an epoch visits the shards in a seeded order, loading one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.data.episode_format import DatasetError
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate

SPLIT_SEED_OFFSET = 7919  # the split draws from its own stream, so changing --seed does not reuse it for order


@dataclass(frozen=True)
class EpisodeRef:
    """One episode of one file."""

    file: int
    index: int
    length: int


@dataclass(frozen=True)
class WindowSpec:
    history: int
    frameskip: int

    @property
    def span(self) -> int:
        """Env steps from a window's first frame to its last."""
        return self.history * self.frameskip

    def starts(self, length: int) -> int:
        """Number of window starts in an episode of `length` rows."""
        return max(0, length - self.span)


@dataclass(frozen=True)
class DataInfo:
    """What the files hold, checked for consistency across files."""

    files: tuple[Path, ...]
    image_shape: tuple[int, int, int]
    action_dim: int
    state_dim: int
    control_dt: float
    episodes: tuple[EpisodeRef, ...]

    @property
    def frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def frame_bytes(self) -> int:
        h, w, c = self.image_shape
        return h * w * c


def inspect_files(paths: Sequence[str | Path]) -> DataInfo:
    """Validate every file and check they can be trained on together; DatasetError names the mismatch."""
    if not paths:
        raise DatasetError("no --data file given")
    files = tuple(Path(p) for p in paths)
    episodes: list[EpisodeRef] = []
    first: dict[str, Any] | None = None
    for number, path in enumerate(files):
        summary = validate(path)
        here = {
            "image_shape": tuple(int(v) for v in summary.image_shape),
            "action_dim": summary.action_dim,
            "state_dim": summary.state_dim,
            "control_dt": float(summary.attributes["control_dt"]),
        }
        if first is None:
            first = here
        else:
            for key in ("image_shape", "action_dim", "state_dim"):
                if here[key] != first[key]:
                    raise DatasetError(
                        f"{path}: {key} {here[key]} differs from {first[key]} in {files[0]}; "
                        "train on files of one robot/camera setup"
                    )
            if not np.isclose(here["control_dt"], first["control_dt"]):
                raise DatasetError(
                    f"{path}: control_dt {here['control_dt']} s differs from {first['control_dt']} s in {files[0]}"
                )
        episodes.extend(EpisodeRef(number, i, int(n)) for i, n in enumerate(summary.episode_lengths))
    assert first is not None
    return DataInfo(files, first["image_shape"], first["action_dim"], first["state_dim"], first["control_dt"],
                    tuple(episodes))  # fmt: skip


def split_episodes(
    info: DataInfo, spec: WindowSpec, val_fraction: float, seed: int
) -> tuple[list[EpisodeRef], list[EpisodeRef]]:
    """Seeded split by episode (never by frame); only episodes long enough for one window count.

    Raises DatasetError with the counts when there is not one window, or when a validation split was
    asked for and fewer than two usable episodes exist.
    """
    usable = [e for e in info.episodes if spec.starts(e.length) > 0]
    if not usable:
        longest = max((e.length for e in info.episodes), default=0)
        raise DatasetError(
            f"no episode is long enough for one training window: a window needs {spec.span + 1} frames "
            f"(history {spec.history} x frameskip {spec.frameskip} + 1); {len(info.episodes)} episodes, "
            f"longest {longest} frames"
        )
    if val_fraction <= 0:
        return usable, []
    if len(usable) < 2:
        raise DatasetError(
            f"a validation split needs at least 2 episodes with a full window ({spec.span + 1} frames); "
            f"found {len(usable)} of {len(info.episodes)}. Collect more episodes or pass --val-fraction 0"
        )
    order = np.random.default_rng(seed + SPLIT_SEED_OFFSET).permutation(len(usable))
    n_val = min(len(usable) - 1, max(1, round(val_fraction * len(usable))))
    val = sorted((usable[i] for i in order[:n_val]), key=lambda e: (e.file, e.index))
    train = sorted((usable[i] for i in order[n_val:]), key=lambda e: (e.file, e.index))
    return train, val


def action_statistics(info: DataInfo, episodes: Sequence[EpisodeRef]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the (finite) actions of `episodes`; a constant dimension gets std 1."""
    total = np.zeros(info.action_dim)
    total_sq = np.zeros(info.action_dim)
    count = 0
    for file_number, refs in _by_file(episodes).items():
        with EpisodeReader(info.files[file_number], check=False) as reader:
            for ref in refs:
                actions = reader.actions(ref.index).astype(np.float64)
                actions = actions[np.isfinite(actions).all(axis=1)]
                total += actions.sum(0)
                total_sq += np.square(actions).sum(0)
                count += len(actions)
    if count == 0:
        raise DatasetError("the training episodes hold no finite action")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def _by_file(episodes: Sequence[EpisodeRef]) -> dict[int, list[EpisodeRef]]:
    grouped: dict[int, list[EpisodeRef]] = {}
    for ref in episodes:
        grouped.setdefault(ref.file, []).append(ref)
    return grouped


class EpisodeBlock:
    """Some episodes loaded into RAM, with the start row of every window they hold."""

    def __init__(
        self, info: DataInfo, episodes: Sequence[EpisodeRef], spec: WindowSpec, action_mean: np.ndarray,
        action_std: np.ndarray, *, with_qpos: bool = False,
    ) -> None:  # fmt: skip
        self.spec = spec
        pixels: list[np.ndarray] = []
        actions: list[np.ndarray] = []
        qpos: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        row = 0
        for file_number, refs in _by_file(episodes).items():
            with EpisodeReader(info.files[file_number], check=False) as reader:
                for ref in refs:
                    pixels.append(reader.pixels(ref.index))
                    raw = reader.actions(ref.index)
                    actions.append(((raw - action_mean) / action_std).astype(np.float32))
                    if with_qpos:
                        qpos.append(reader.read("qpos", ref.index))
                    starts.append(row + np.arange(spec.starts(ref.length)))
                    row += ref.length
        self.pixels = np.concatenate(pixels) if pixels else np.zeros((0, *info.image_shape), np.uint8)
        self.actions = np.concatenate(actions) if actions else np.zeros((0, info.action_dim), np.float32)
        self.qpos = np.concatenate(qpos) if qpos else None
        self.window_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.window_starts)

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + self.actions.nbytes

    def batch(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows by number -> frames (B, H+1, h, w, 3) uint8 and blocks (B, H, fs*A) float32."""
        spec = self.spec
        first = self.window_starts[np.asarray(windows, np.int64)]
        frames = self.pixels[first[:, None] + spec.frameskip * np.arange(spec.history + 1)]
        steps = self.actions[first[:, None] + np.arange(spec.span)]
        return frames, steps.reshape(len(first), spec.history, -1)


def plan_shards(info: DataInfo, episodes: Sequence[EpisodeRef], budget_bytes: int) -> list[list[EpisodeRef]]:
    """Consecutive groups of episodes whose pixels fit `budget_bytes` each (one group when all fit)."""
    shards: list[list[EpisodeRef]] = [[]]
    used = 0
    frame = info.frame_bytes()
    for ref in episodes:
        size = ref.length * frame
        if shards[-1] and used + size > budget_bytes:
            shards.append([])
            used = 0
        shards[-1].append(ref)
        used += size
    return shards


class WindowStream:
    """Batches of training windows for one process of a (possibly distributed) run.

    Each epoch visits the shards in an order drawn from (seed, epoch); inside a shard the windows are
    shuffled and dealt to the ranks by torch's DistributedSampler (seed, epoch), and each rank cuts its
    share into batches of `batch_size` (incomplete last batches dropped, so all ranks take the same
    number of steps). The order is a pure function of (seed, epoch), which is what makes resume exact.
    """

    def __init__(
        self, info: DataInfo, episodes: Sequence[EpisodeRef], spec: WindowSpec, action_mean: np.ndarray,
        action_std: np.ndarray, *, batch_size: int, budget_bytes: int, seed: int, rank: int = 0, world: int = 1,
    ) -> None:  # fmt: skip
        self.info, self.spec, self.seed, self.rank, self.world = info, spec, seed, rank, world
        self.batch_size = batch_size
        self.action_mean, self.action_std = action_mean, action_std
        self.shards = plan_shards(info, episodes, budget_bytes)
        self.windows_per_shard = [sum(spec.starts(e.length) for e in shard) for shard in self.shards]
        self._cached: tuple[int, EpisodeBlock] | None = None
        if len(self.shards) == 1:
            self._cached = (0, self._load(0))

    @property
    def in_memory(self) -> bool:
        return len(self.shards) == 1

    @property
    def resident_bytes(self) -> int:
        return self._cached[1].nbytes if self._cached else 0

    def batches_per_epoch(self) -> int:
        per_rank = [n // self.world for n in self.windows_per_shard]
        return sum(n // self.batch_size for n in per_rank)

    def _load(self, shard: int) -> EpisodeBlock:
        return EpisodeBlock(self.info, self.shards[shard], self.spec, self.action_mean, self.action_std)

    def _block(self, shard: int) -> EpisodeBlock:
        if self._cached is None or self._cached[0] != shard:
            self._cached = None  # free the previous shard before reading the next
            self._cached = (shard, self._load(shard))
        return self._cached[1]

    def batch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(shard, window numbers) of every batch of this rank in `epoch`, in order."""
        from torch.utils.data import DistributedSampler

        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        plan: list[tuple[int, np.ndarray]] = []
        for shard in order:
            sampler = DistributedSampler(
                range(self.windows_per_shard[shard]), num_replicas=self.world, rank=self.rank, shuffle=True,
                seed=self.seed + 1_000_003 * int(shard), drop_last=True,
            )  # fmt: skip
            sampler.set_epoch(epoch)
            mine = np.fromiter(iter(sampler), dtype=np.int64)
            for b in range(len(mine) // self.batch_size):
                plan.append((int(shard), mine[b * self.batch_size : (b + 1) * self.batch_size]))
        return plan

    def first_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The first batch of epoch 0: a real batch for timing and precision measurements."""
        shard, windows = self.batch_plan(0)[0]
        return self._block(shard).batch(windows)

    def epoch(self, epoch: int, skip: int = 0, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of `epoch` after the first `skip`; `workers` > 0 assembles batches ahead in threads
        (numpy indexing releases the GIL), keeping the order."""
        plan = self.batch_plan(epoch)[skip:]
        if workers <= 0:
            for shard, windows in plan:
                yield self._block(shard).batch(windows)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: list = []
            for shard, windows in plan:
                block = self._block(shard)  # shards load in order on this thread
                pending.append(pool.submit(block.batch, windows))
                if len(pending) > 2 * workers:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()
