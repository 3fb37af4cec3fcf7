"""Sizing the `reach64` CPU preset by measurement: train each candidate size for the same wall-clock budget,
then measure how well it would plan.

Why this file exists: the requirement is "a CPU preset for the 64x64 reach task that trains in <=20 minutes
on 2 cores and still plans well". Neither the CEM planner nor the training pipeline exists yet, so this one
file holds what the decision needs and nothing more:

- data: reach2d exploration episodes (policy mixed, 64x64), the last 10% of episodes held out;
- training: the LeWM objective end to end (no stop-gradient), as in the paper: windows of 4 frames
  frameskip 5 apart, next-latent MSE of the causal predictor over the first 3 plus 0.1 x SIGReg over all
  4; AdamW, linear warm-up then cosine over a fixed wall-clock budget, bf16 autocast, batch 64;
- evaluation on held-out episodes, identical items for every config:
  a. teacher-forced next-latent MSE against copying the last latent (ratio < 1: the predictor models the
     dynamics) and against shuffled actions (ratio > 1: it uses the actions);
  b. a one-shot planning proxy mirroring the paper's evaluation (goal = the frame 25 env steps = 5 blocks
     later): 300 candidate sequences, the true one among 299 data-like random ones, ranked by
     ||z_hat_5 - z_goal||^2. Every candidate is simulated once from the true start state, so the argmin
     counts as a success when every joint ends within 0.05 rad of the goal (the Reacher criterion), and
     the Spearman correlation of latent cost with the candidates' true final joint error says whether
     the cost orders candidates as the task does (what CEM relies on);
  c. latent health: per-dimension spread, effective rank, SIGReg on held-out latents, and the Spearman
     correlation of latent distance with joint-space distance, over random frame pairs and over pairs
     of one episode at most 25 env steps apart (the distances a planner compares).

Prints tables, never pass/fail. Training time excludes the evaluations at checkpoints.

    MUJOCO_GL=egl .venv/bin/python bench/reach64_sizing.py [--minutes 4] [--configs small reach64 large]
        [--episodes 300] [--data /tmp/lewm_reach64_sizing.h5] [--lr 1e-3 ...] [--eval-every 1] [--seed 0]
        [--pairs 100] [--samples 300]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np
import torch
from torch import Tensor

from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.model.config import ActionConfig, EncoderConfig, LeWMConfig, PredictorConfig, reach64_config
from lewm_ros.model.lewm import LeWM, count_parameters
from lewm_ros.model.sigreg import SIGReg

SCENE = "reach2d"
IMAGE_SIZE = 64
STEPS_PER_EPISODE = 100
FRAMESKIP = 5
HISTORY = 3
WINDOW_STEPS = HISTORY * FRAMESKIP  # env steps from a window's first frame to its last
HORIZON = 5  # planned blocks: the goal is 25 env steps ahead, as in the paper's Reacher evaluation
SIGREG_WEIGHT = 0.1
BATCH = 64
WEIGHT_DECAY = 1e-3
GRAD_CLIP = 1.0
WARMUP_FRACTION = 0.05  # of the wall-clock budget
HELD_OUT_FRACTION = 0.1
TOLERANCE = 0.05  # rad per joint: the paper's Reacher success criterion
MIN_GOAL_DISTANCE = 2 * TOLERANCE  # planning pairs whose goal is already reached at the start are dropped
EVAL_WINDOWS = 1024
HEALTH_FRAMES = 2048
HEALTH_PAIRS = 8192
NEAR_PAIRS = 1024
SIGREG_EVAL_BATCH = 256


# ------------------------------------------------------------------ candidate sizes


def _lewm_64(width: int, enc_layers: int, enc_heads: int, enc_mlp: int, pred_layers: int, pred_heads: int,
             dim_head: int, pred_mlp: int) -> LeWMConfig:
    """64x64, patch 8 (64 tokens), history 3, frameskip 5, latent = encoder width, projector hidden 4x."""
    return LeWMConfig(
        latent_dim=width,
        projector_hidden=4 * width,
        encoder=EncoderConfig(image_size=IMAGE_SIZE, patch_size=8, width=width, layers=enc_layers,
                              heads=enc_heads, mlp_dim=enc_mlp),
        predictor=PredictorConfig(layers=pred_layers, heads=pred_heads, dim_head=dim_head, mlp_dim=pred_mlp,
                                  dropout=0.0, history=HISTORY),
        action=ActionConfig(action_dim=2, frameskip=FRAMESKIP),
    )


# (width, encoder layers, heads, MLP, predictor layers, heads, dim per head, MLP); `tiny` was added because the
# 4-minute runs favoured the smaller models.
CONFIGS: dict[str, Callable[[], LeWMConfig]] = {
    "tiny": lambda: _lewm_64(64, 2, 2, 256, 2, 4, 16, 256),
    "small": lambda: _lewm_64(96, 3, 3, 384, 3, 4, 24, 384),
    "reach64": reach64_config,
    "large": lambda: _lewm_64(192, 6, 3, 768, 6, 8, 32, 1024),
}


# ------------------------------------------------------------------ data


@dataclass
class Episodes:
    """Some episodes of the file, in memory. Row k = observation k and the action applied after it."""

    pixels: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N, A) float32, NaN on each episode's last row
    qpos: np.ndarray  # (N, S)
    qvel: np.ndarray  # (N, S)
    starts: np.ndarray  # (E,) first row of each episode in these arrays
    lengths: np.ndarray  # (E,)

    def first_rows(self, steps: int, before: int = 0) -> np.ndarray:
        """Rows t with `before` env steps of history behind and `steps` executed actions ahead (t+steps exists)."""
        return np.concatenate([np.arange(s + before, s + n - steps)
                               for s, n in zip(self.starts, self.lengths, strict=True)])


def load_episodes(reader: EpisodeReader, indices: range) -> Episodes:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("pixels", "action", "qpos", "qvel")}
    for index in indices:
        for name, chunks in parts.items():
            chunks.append(reader.read(name, index))
    lengths = reader.episode_lengths[list(indices)]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return Episodes(*(np.concatenate(parts[n]) for n in ("pixels", "action", "qpos", "qvel")), starts, lengths)


def ensure_data(path: Path, episodes: int, workers: int = 2) -> None:
    """Collect (or top up) the cache; episode i depends only on (seed, i), so appending gives the same file."""
    have = 0
    if path.exists():
        with EpisodeReader(path) as reader:
            have = reader.num_episodes
    if have >= episodes:
        print(f"data: reusing {path} ({have} episodes, using the first {episodes})")
        return
    spec = CollectionSpec(scene=SCENE, episodes=episodes - have, steps=STEPS_PER_EPISODE, policy="mixed", seed=0,
                          env=ReachConfig(image_size=IMAGE_SIZE))
    report = collect(spec, path, mode="append" if have else "create", workers=workers)
    print(f"data: collected {report.episodes_written} episodes ({report.frames_written} frames) into {path} "
          f"in {report.seconds:.0f} s")


def window_batch(episodes: Episodes, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """Frames t, t+5, t+10, t+15 (B, 4, H, W, 3) uint8 and the 3 blocks leaving the first 3 (B, 3, 5*A)."""
    frames = episodes.pixels[rows[:, None] + FRAMESKIP * np.arange(HISTORY + 1)]
    steps = episodes.actions[rows[:, None] + np.arange(WINDOW_STEPS)]
    blocks = steps.reshape(len(rows), HISTORY, -1)
    return torch.from_numpy(frames), torch.from_numpy(blocks)


# ------------------------------------------------------------------ evaluation items (shared by all configs)


@dataclass
class PlanningSet:
    """Start/goal pairs from held-out episodes with S candidate action sequences each (300 by default)."""

    context: Tensor  # (P, 3, H, W, 3) frames t-10, t-5, t
    past: Tensor  # (P, 2, 5*A) blocks leaving frames t-10 and t-5
    candidates: Tensor  # (P, S, 5, 5*A); candidate 0 = the blocks actually executed from t
    goal: Tensor  # (P, H, W, 3) frame t+25
    start_qpos: np.ndarray  # (P, S)
    start_qvel: np.ndarray
    goal_qpos: np.ndarray
    final_error: np.ndarray | None = None  # (P, S) max joint error to the goal after each candidate


@dataclass
class EvalSet:
    windows: tuple[Tensor, Tensor]
    shuffle: Tensor  # a fixed permutation of the windows, to pair latents with other windows' actions
    plan: PlanningSet
    health_frames: Tensor  # (N, H, W, 3)
    health_qpos: np.ndarray  # (N, S)
    health_pairs: np.ndarray  # (M, 2) indices into health_frames
    near_frames: Tensor  # (M, 2, H, W, 3) frames of one episode at most 25 env steps apart
    near_qpos: np.ndarray  # (M, 2, S)


def random_sequences(rng: np.random.Generator, count: int, train: Episodes, snippet_rows: np.ndarray) -> np.ndarray:
    """(count, 25, A) sequences drawn like the data's actions: a third i.i.d. uniform commands, a third
    Ornstein-Uhlenbeck sweeps with the smooth policy's constants, a third real 25-step snippets of
    training episodes (random, smooth and still segments, as collected)."""
    steps, dim = HORIZON * FRAMESKIP, train.actions.shape[1]
    n_uniform = count // 3
    n_smooth = count // 3
    n_snippet = count - n_uniform - n_smooth
    uniform = rng.uniform(-1.0, 1.0, (n_uniform, steps, dim))
    smooth = np.empty((n_smooth, steps, dim))
    state = rng.normal(0.0, 0.2 / math.sqrt(2 * 0.05 - 0.05**2), (n_smooth, dim))
    for k in range(steps):
        state = 0.95 * state + 0.2 * rng.normal(size=state.shape)
        smooth[:, k] = np.clip(state, -1.0, 1.0)
    rows = rng.choice(snippet_rows, n_snippet)
    snippets = train.actions[rows[:, None] + np.arange(steps)]
    return np.concatenate([uniform, smooth, snippets]).astype(np.float32)


def build_eval_set(train: Episodes, held: Episodes, pairs: int, samples: int, seed: int) -> EvalSet:
    rng = np.random.default_rng(seed + 1000)
    window_rows = held.first_rows(WINDOW_STEPS)
    windows = rng.choice(window_rows, min(EVAL_WINDOWS, len(window_rows)), replace=False)
    plan_steps = HORIZON * FRAMESKIP
    candidates_t = held.first_rows(plan_steps, before=(HISTORY - 1) * FRAMESKIP)
    moving = np.abs(held.qpos[candidates_t + plan_steps] - held.qpos[candidates_t]).max(axis=1) > MIN_GOAL_DISTANCE
    starts = rng.choice(candidates_t[moving], min(pairs, int(moving.sum())), replace=False)
    snippet_rows = train.first_rows(plan_steps)
    dim = held.actions.shape[1]
    block = FRAMESKIP * dim
    context = held.pixels[starts[:, None] + FRAMESKIP * np.arange(-(HISTORY - 1), 1)]
    past = held.actions[starts[:, None] + np.arange(-(HISTORY - 1) * FRAMESKIP, 0)].reshape(len(starts), -1, block)
    true = held.actions[starts[:, None] + np.arange(plan_steps)]
    candidates = np.stack([np.concatenate([t[None], random_sequences(rng, samples - 1, train, snippet_rows)])
                           for t in true])
    plan = PlanningSet(
        context=torch.from_numpy(context),
        past=torch.from_numpy(past),
        candidates=torch.from_numpy(candidates.reshape(len(starts), samples, HORIZON, block)),
        goal=torch.from_numpy(held.pixels[starts + plan_steps]),
        start_qpos=held.qpos[starts], start_qvel=held.qvel[starts], goal_qpos=held.qpos[starts + plan_steps],
    )  # fmt: skip
    frames = rng.choice(len(held.pixels), min(HEALTH_FRAMES, len(held.pixels)), replace=False)
    near_first = rng.choice(held.first_rows(plan_steps), NEAR_PAIRS)
    near = np.stack([near_first, near_first + rng.integers(1, plan_steps + 1, NEAR_PAIRS)], axis=1)
    return EvalSet(
        windows=window_batch(held, windows),
        shuffle=torch.from_numpy(rng.permutation(len(windows))),
        plan=plan,
        health_frames=torch.from_numpy(held.pixels[frames]),
        health_qpos=held.qpos[frames],
        health_pairs=rng.integers(0, len(frames), (HEALTH_PAIRS, 2)),
        near_frames=torch.from_numpy(held.pixels[near]),
        near_qpos=held.qpos[near],
    )


def replay(env: ReachEnv, qpos: np.ndarray, qvel: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Final joint state after executing per-step actions from (qpos, qvel), exactly as collection did."""
    env.set_state(qpos, qvel)
    for action in steps:
        env.step(action)
    return env.qpos


def simulate(env: ReachEnv, qpos: np.ndarray, qvel: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """`replay` without rendering a frame per step (~10x faster; checked against `replay` in main).

    ReachEnv.step's path for velocity servos (reach2d): clip, scale by the maximum speed, reduce commands
    that would cross a joint limit within the control period, hold for the control period.
    """
    env.set_state(qpos, qvel)
    for action in steps:
        speed = np.clip(action, -1.0, 1.0) * env.max_joint_speed
        position = env.qpos
        env.data.ctrl[:] = np.clip(speed, np.minimum((env.joint_lower - position) / env.control_dt, 0.0),
                                   np.maximum((env.joint_upper - position) / env.control_dt, 0.0))
        mujoco.mj_step(env.model, env.data, env.substeps)
    return env.qpos


def candidate_end(execute: Callable[..., np.ndarray], env: ReachEnv, plan: PlanningSet, p: int, c: int) -> np.ndarray:
    """Final joint state of candidate c of pair p, executed by `replay` or `simulate`."""
    steps = plan.candidates[p, c].reshape(-1, plan.start_qpos.shape[1]).numpy()
    return execute(env, plan.start_qpos[p], plan.start_qvel[p], steps)


def candidate_errors(env: ReachEnv, plan: PlanningSet) -> np.ndarray:
    """(P, S) max joint error to the goal at the end of every candidate (config-independent, run once)."""
    errors = np.empty(tuple(plan.candidates.shape[:2]))
    for p in range(len(errors)):
        for c in range(errors.shape[1]):
            errors[p, c] = np.abs(candidate_end(simulate, env, plan, p, c) - plan.goal_qpos[p]).max()
    return errors


# ------------------------------------------------------------------ metrics


@torch.no_grad()
def encode(model: LeWM, frames: Tensor, chunk: int = 512) -> Tensor:
    """Latents of frames with any leading axes, in chunks (eval mode, fp32)."""
    flat = frames.reshape((-1,) + tuple(frames.shape[-3:]))
    z = torch.cat([model.encode(flat[i : i + chunk]) for i in range(0, len(flat), chunk)])
    return z.reshape(tuple(frames.shape[:-3]) + (z.shape[-1],))


@torch.no_grad()
def teacher_forced(model: LeWM, ev: EvalSet) -> dict[str, float]:
    frames, blocks = ev.windows
    z = encode(model, frames)
    target = z[:, 1:]
    pred = model.predict(z[:, :HISTORY], model.embed_actions(blocks))
    shuffled = model.predict(z[:, :HISTORY], model.embed_actions(blocks[ev.shuffle]))
    mse = (pred - target).square().mean().item()
    return {
        "tf_ratio": mse / (z[:, :HISTORY] - target).square().mean().item(),
        "shuf_ratio": (shuffled - target).square().mean().item() / mse,
    }


@torch.no_grad()
def planning(model: LeWM, plan: PlanningSet, chunk: int = 4) -> dict[str, float]:
    """Rank of the true sequence among the candidates, the true outcome of the cheapest one, and how well
    the latent cost orders the candidates by their true final joint error."""
    assert plan.final_error is not None
    context, goal = encode(model, plan.context), encode(model, plan.goal)
    costs = []
    for i in range(0, len(goal), chunk):
        z = model.rollout(context[i : i + chunk], plan.past[i : i + chunk], plan.candidates[i : i + chunk])
        costs.append((z[:, :, -1] - goal[i : i + chunk, None]).square().sum(-1))  # (b, S)
    cost = torch.cat(costs).numpy()
    rank = (cost[:, 1:] < cost[:, :1]).sum(1)
    errors = plan.final_error[np.arange(len(cost)), cost.argmin(1)]
    samples = plan.candidates.shape[1]
    return {
        "rank_mean": float(rank.mean()),
        "rank_median": float(np.median(rank)),
        "top1": float((rank == 0).mean()),
        "top5pct": float((rank < 0.05 * samples).mean()),
        "success": float((errors <= TOLERANCE).mean()),
        "err_median": float(np.median(errors)),
        "cost_spearman": float(np.mean([spearman(c, e) for c, e in zip(cost, plan.final_error, strict=True)])),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (continuous values: ties have probability zero)."""
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@torch.no_grad()
def latent_health(model: LeWM, ev: EvalSet, sigreg: SIGReg) -> dict[str, float]:
    z = encode(model, ev.health_frames)
    std = z.std(0)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0)
    n = len(z) // SIGREG_EVAL_BATCH * SIGREG_EVAL_BATCH
    sig = sigreg(z[:n].reshape(-1, SIGREG_EVAL_BATCH, z.shape[-1]), generator=torch.Generator().manual_seed(0))
    i, j = ev.health_pairs.T
    latent_distance = (z[i] - z[j]).norm(dim=-1).numpy()
    joint_distance = np.linalg.norm(ev.health_qpos[i] - ev.health_qpos[j], axis=-1)
    near = encode(model, ev.near_frames)
    near_latent = (near[:, 0] - near[:, 1]).norm(dim=-1).numpy()
    near_joint = np.linalg.norm(ev.near_qpos[:, 0] - ev.near_qpos[:, 1], axis=-1)
    return {
        "std_min": std.min().item(),
        "std_median": std.median().item(),
        "eff_rank": (eigenvalues.sum() ** 2 / eigenvalues.square().sum()).item(),
        "sigreg": sig.item(),
        "spearman": spearman(latent_distance, joint_distance),
        "spearman_near": spearman(near_latent, near_joint),
    }


def evaluate(model: LeWM, ev: EvalSet, sigreg: SIGReg) -> dict[str, float]:
    model.eval()
    started = time.perf_counter()
    metrics = {**teacher_forced(model, ev), **planning(model, ev.plan), **latent_health(model, ev, sigreg)}
    metrics["eval_s"] = time.perf_counter() - started
    model.train()
    return metrics


# ------------------------------------------------------------------ training


def learning_rate(base: float, progress: float) -> float:
    """Linear warm-up over the first 5% of the budget, then cosine to zero at its end."""
    if progress < WARMUP_FRACTION:
        return base * max(progress, 0.01 * WARMUP_FRACTION) / WARMUP_FRACTION
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))))


def lewm_loss(model: LeWM, sigreg: SIGReg, frames: Tensor, blocks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's objective, end to end: next-latent MSE + 0.1 x SIGReg of the (T, B, D) latents."""
    z = model.encode(frames)
    pred = model.predict(z[:, :HISTORY], model.embed_actions(blocks))
    prediction = (pred.float() - z[:, 1:].float()).square().mean()
    regulariser = sigreg(z.transpose(0, 1))
    return prediction + SIGREG_WEIGHT * regulariser, prediction, regulariser


@dataclass
class RunResult:
    name: str
    lr: float
    params: int
    steps: int
    train_seconds: float
    ms_per_step: float
    train_pred: float
    train_sigreg: float
    checkpoints: list[tuple[float, int, dict[str, float]]]  # (training minutes, steps, metrics)


def run(name: str, cfg: LeWMConfig, lr: float, train: Episodes, ev: EvalSet,
        args: argparse.Namespace) -> RunResult:
    torch.manual_seed(args.seed)
    model = LeWM(cfg).train()
    sigreg = SIGReg()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(args.seed)
    rows = train.first_rows(WINDOW_STEPS)
    budget = args.minutes * 60.0
    eval_every = args.eval_every * 60.0 if args.eval_every > 0 else math.inf
    next_eval = eval_every
    elapsed, steps = 0.0, 0
    recent_pred: list[float] = []
    recent_sig: list[float] = []
    checkpoints: list[tuple[float, int, dict[str, float]]] = []
    print(f"\n== {name} lr {lr:g}: {count_parameters(model) / 1e6:.2f}M params, {args.minutes:g} min budget ==",
          flush=True)
    while elapsed < budget:
        started = time.perf_counter()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(lr, elapsed / budget)
        frames, blocks = window_batch(train, rng.choice(rows, BATCH))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, prediction, regulariser = lewm_loss(model, sigreg, frames, blocks)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimiser.step()
        elapsed += time.perf_counter() - started
        steps += 1
        recent_pred = [*recent_pred[-49:], prediction.item()]
        recent_sig = [*recent_sig[-49:], regulariser.item()]
        if elapsed >= next_eval and elapsed < budget:
            checkpoints.append(_checkpoint(model, ev, sigreg, elapsed, steps, recent_pred, recent_sig))
            next_eval += eval_every
    checkpoints.append(_checkpoint(model, ev, sigreg, elapsed, steps, recent_pred, recent_sig))
    return RunResult(name, lr, count_parameters(model), steps, elapsed, 1e3 * elapsed / steps,
                     float(np.mean(recent_pred)), float(np.mean(recent_sig)), checkpoints)


def _checkpoint(model: LeWM, ev: EvalSet, sigreg: SIGReg, elapsed: float, steps: int,
                recent_pred: list[float], recent_sig: list[float]) -> tuple[float, int, dict[str, float]]:
    metrics = evaluate(model, ev, sigreg)
    metrics["train_pred"] = float(np.mean(recent_pred))
    metrics["train_sigreg"] = float(np.mean(recent_sig))
    print(f"  {elapsed / 60:5.2f} min {steps:6d} steps | train pred {metrics['train_pred']:.4f} "
          f"sigreg {metrics['train_sigreg']:.2f} | {_metric_line(metrics)} | eval {metrics['eval_s']:.0f} s",
          flush=True)
    return elapsed / 60.0, steps, metrics


# ------------------------------------------------------------------ report

METRIC_COLUMNS = (  # key, header, format
    ("tf_ratio", "tf/copy", "{:.3f}"),
    ("shuf_ratio", "shuf/tf", "{:.2f}"),
    ("rank_mean", "rank mean", "{:.1f}"),
    ("rank_median", "rank med", "{:.1f}"),
    ("top1", "top1", "{:.2f}"),
    ("top5pct", "top5%", "{:.2f}"),
    ("success", "succ", "{:.2f}"),
    ("err_median", "err med", "{:.3f}"),
    ("cost_spearman", "cost sp", "{:.3f}"),
    ("std_min", "std min", "{:.2f}"),
    ("std_median", "std med", "{:.2f}"),
    ("eff_rank", "eff rank", "{:.1f}"),
    ("sigreg", "sigreg", "{:.2f}"),
    ("spearman", "spearman", "{:.3f}"),
    ("spearman_near", "sp near", "{:.3f}"),
)
LOWER_IS_BETTER = {"tf_ratio", "rank_mean", "rank_median", "err_median", "sigreg"}


def _metric_line(metrics: dict[str, float]) -> str:
    keys = ("tf_ratio", "shuf_ratio", "rank_mean", "top1", "success", "cost_spearman", "spearman_near")
    return " ".join(f"{header} {fmt.format(metrics[k])}" for k, header, fmt in METRIC_COLUMNS if k in keys)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def report(results: list[RunResult], plan_pairs: int, samples: int) -> None:
    print(f"\n== final, {plan_pairs} planning pairs x {samples} candidates; batch {BATCH} ==")
    header = ["config", "lr", "params", "ms/step", "steps", "windows", "train pred", "train sig"]
    header += [h for _, h, _ in METRIC_COLUMNS]
    rows = []
    for r in results:
        final = r.checkpoints[-1][2]
        rows.append([r.name, f"{r.lr:g}", f"{r.params / 1e6:.2f}M", f"{r.ms_per_step:.0f}", str(r.steps),
                     str(r.steps * BATCH), f"{r.train_pred:.4f}", f"{r.train_sigreg:.2f}"]
                    + [fmt.format(final[k]) for k, _, fmt in METRIC_COLUMNS])
    print(_table(header, rows))
    for r in results:
        if len(r.checkpoints) < 2:
            continue
        print(f"\n-- {r.name} lr {r.lr:g}: checkpoints (training minutes; eval time excluded) --")
        header = ["min", "steps", "train pred"] + [h for _, h, _ in METRIC_COLUMNS]
        rows = [[f"{m:.2f}", str(s), f"{x['train_pred']:.4f}"] + [fmt.format(x[k]) for k, _, fmt in METRIC_COLUMNS]
                for m, s, x in r.checkpoints]
        print(_table(header, rows))
        firsts = []
        for key in ("tf_ratio", "rank_mean", "top1", "success", "cost_spearman", "spearman_near"):
            values = [x[key] for _, _, x in r.checkpoints]
            best = min(values) if key in LOWER_IS_BETTER else max(values)
            minute = next(m for m, _, x in r.checkpoints if x[key] == best)
            firsts.append(f"{key} {best:.3g} @ {minute:.1f} min")
        print("best: " + "; ".join(firsts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="training wall-clock budget per config")
    parser.add_argument("--configs", nargs="+", default=["small", "reach64", "large"], choices=tuple(CONFIGS))
    parser.add_argument("--episodes", type=int, default=300, help="episodes used (the last 10%% held out)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/lewm_reach64_sizing.h5"), help="episode cache")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3], help="peak learning rate(s) to try")
    parser.add_argument("--eval-every", type=float, default=1.0, help="training minutes between checkpoints")
    parser.add_argument("--pairs", type=int, default=100, help="planning (start, goal) pairs")
    parser.add_argument("--samples", type=int, default=300, help="candidates per pair (the true one included)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    ensure_data(args.data, args.episodes)
    with EpisodeReader(args.data) as reader:
        held_out = max(1, round(HELD_OUT_FRACTION * args.episodes))
        train = load_episodes(reader, range(args.episodes - held_out))
        held = load_episodes(reader, range(args.episodes - held_out, args.episodes))
    ev = build_eval_set(train, held, args.pairs, args.samples, args.seed)
    print(f"train: {len(train.lengths)} episodes, {len(train.pixels)} frames, "
          f"{len(train.first_rows(WINDOW_STEPS))} windows; held out: {len(held.lengths)} episodes, "
          f"{len(ev.shuffle)} windows, {len(ev.plan.goal)} planning pairs, {len(ev.health_frames)} health frames")

    plan = ev.plan
    with ReachEnv(SCENE, ReachConfig(image_size=IMAGE_SIZE)) as env:
        started = time.perf_counter()
        plan.final_error = candidate_errors(env, plan)
        seconds = time.perf_counter() - started
        checked = [(p, c) for p in range(len(plan.goal)) for c in (0, 1, 150, 299) if c < args.samples]
        replayed = np.array([candidate_end(replay, env, plan, p, c) for p, c in checked])
        simulated = np.array([candidate_end(simulate, env, plan, p, c) for p, c in checked])
    distance = np.abs(plan.goal_qpos - plan.start_qpos).max(axis=1)
    random_best = plan.final_error[:, 1:].min(axis=1)
    print(f"planning pairs: start-goal max joint distance median {np.median(distance):.2f} rad; true sequences end "
          f"within {plan.final_error[:, 0].max():.1e} rad of the goal; fast simulation vs ReachEnv.step "
          f"{np.abs(replayed - simulated).max():.1e} rad; all candidates simulated in {seconds:.0f} s")
    print(f"random candidates: median final error {np.median(plan.final_error[:, 1:]):.3f} rad; the best of the "
          f"{args.samples - 1} per pair: median {np.median(random_best):.3f} rad, within {TOLERANCE} rad "
          f"for {np.mean(random_best <= TOLERANCE):.2f} of the pairs")
    results = [run(name, CONFIGS[name](), lr, train, ev, args) for name in args.configs for lr in args.lr]
    report(results, len(plan.goal), args.samples)


if __name__ == "__main__":
    main()
