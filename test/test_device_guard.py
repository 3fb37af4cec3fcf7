"""Device guards that run without a GPU: every tensor a code path makes must follow its inputs' device.

Issue 19: `lewm-ros train --device cuda` crashed at the first validation. `evaluate_windows` gathered latents
with `.cpu()` and handed them to `latent_health`, whose SIGReg had been `.to(cuda)`-ed, so its quadrature-grid
buffers were on the GPU while the latents were on the CPU. No CPU-only test could see it: on one device every
tensor is on the same device. Two stand-ins make the second device appear on a CPU-only machine:

1. The meta device. It is a real second device (shapes and dtypes, no data): torch raises the very error the
   GPU run raised ("Tensor on device cpu is not on the expected device meta") when a meta tensor meets a CPU
   one, and `.item()`/`float()`/`.numpy()` on a meta tensor raise too. Moving a module (or its inputs) to meta
   while the other side stays on the CPU reproduces "state on one device, inputs on another" exactly: the old
   SIGReg fails `test_sigreg_follows_its_input_device` and `test_evaluate_windows_with_sigreg_elsewhere`, the
   fixed one (grid made on the input's device at each call) passes.
2. `torch.set_default_device("meta")` around a CPU run with real values. A tensor made without `device=`
   (`torch.zeros(n)`, `torch.tensor(...)`, `torch.as_tensor(ndarray)`) lands on the default device, which
   on a GPU run is the CPU while the data are on the GPU; here it lands on meta, and the first time it meets
   a real CPU tensor or is read, the run raises. Modules are built before the guard (their parameters are
   what a real run moved to its device); `torch.from_numpy` and `torch.Generator()` ignore the default
   device, so host-side code that says where it works passes.

Together they cover the training step, validation and the collapse monitor, SIGReg, the planner's strategies
(CEM/iCEM/MPPI scoring) with and without a roadmap, and LatentMPC. What only a GPU can check (CUDA kernels,
capture, real cross-device checkpoints) is in test_cuda_paths.py, skipped here.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.planning.core import LatentPlanner, PlannerConfig
from lewm_ros.training.evaluate import evaluate_windows
from lewm_ros.training.monitor import latent_health
from lewm_ros.training.objective import Objective, prediction_loss, sigreg_loss

META = torch.device("meta")


@contextlib.contextmanager
def default_device_meta():
    """Tensors made without `device=` land on meta while this runs (see the module docstring, point 2)."""
    previous = torch.get_default_device()
    torch.set_default_device(META)
    try:
        yield
    finally:
        torch.set_default_device(previous)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LeWM(preset("tiny")).eval()


class FakeBlock:
    """What evaluate_windows reads of an EpisodeBlock: `batch(windows)` -> uint8 frames and float blocks."""

    def __init__(self, cfg, windows: int = 12) -> None:
        rng = np.random.default_rng(0)
        size, history = cfg.encoder.image_size, cfg.predictor.history
        self.frames = rng.integers(0, 256, (windows, history + 1, size, size, 3), dtype=np.uint8)
        self.blocks = rng.normal(size=(windows, history, cfg.action.block_dim)).astype(np.float32)

    def batch(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.frames[windows], self.blocks[windows]


# ---- SIGReg and the collapse monitor -------------------------------------------------------------------


def test_sigreg_follows_its_input_device():
    """The original SIGReg kept its grid in buffers: built on the CPU and fed meta (or moved to meta and fed
    the CPU) it raised the same-device error; the statistic must be computed where the embeddings are."""
    torch.manual_seed(1)
    embeddings = torch.randn(3, 64, 8)
    sigreg = SIGReg(num_directions=16)
    expected = sigreg(embeddings, generator=torch.Generator().manual_seed(0))
    assert sigreg(embeddings.to(META)).device == META  # module on the CPU, data elsewhere
    moved = copy.deepcopy(sigreg).to(META)  # module moved elsewhere (as loop.py moves it to cuda), data on the CPU
    value = moved(embeddings, generator=torch.Generator().manual_seed(0))
    assert value.device.type == "cpu" and torch.equal(value, expected)
    with default_device_meta():
        again = sigreg(embeddings, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, expected)


@pytest.mark.parametrize("count", [1, 40])
def test_latent_health_computes_on_the_latents_device(count):
    """One latent takes the zero-std branch (it made a device-less zeros tensor): covered by count=1."""
    latents = torch.randn(count, 8, generator=torch.Generator().manual_seed(2))
    sigreg = SIGReg(num_directions=16)
    expected = latent_health(latents, sigreg, chunk=16)
    with default_device_meta():
        guarded = latent_health(latents, copy.deepcopy(sigreg).to(META), chunk=16)
    assert guarded == expected


def test_evaluate_windows_with_sigreg_elsewhere(tiny):
    """Issue 19's crash on a CPU-only machine: the SIGReg moved to another device than the one the latents
    end up on. The old evaluate_windows raised "Tensor on device cpu is not on the expected device meta"."""
    block = FakeBlock(tiny.cfg)
    windows = np.arange(len(block.frames))
    cpu = torch.device("cpu")
    expected = evaluate_windows(tiny, block, windows, SIGReg(num_directions=16), cpu, "fp32", batch=5)
    with default_device_meta():
        result = evaluate_windows(tiny, block, windows, SIGReg(num_directions=16).to(META), cpu, "fp32", batch=5)
    assert result == expected
    assert np.isfinite(result["pred"]) and np.isfinite(result["sigreg"]) and result["health"]["eff_rank"] > 0


# ---- the training step -----------------------------------------------------------------------------------


def training_step(model: LeWM, sigreg: SIGReg, frames: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """loop.py's step up to the optimiser: forward, both loss terms, backward."""
    model.train()
    z, pred = Objective(model)(frames, blocks)
    loss = prediction_loss(z, pred) + 0.1 * sigreg_loss(sigreg, z)
    loss.backward()
    return loss


def test_training_step_makes_nothing_off_its_device(tiny):
    """The whole step on meta (a tensor the step made on the CPU would meet meta ones and raise), and on the
    CPU under a meta default device (a device-less tensor would land on meta)."""
    cfg = tiny.cfg
    size, history = cfg.encoder.image_size, cfg.predictor.history
    frames = torch.randint(0, 256, (4, history + 1, size, size, 3), dtype=torch.uint8)
    blocks = torch.randn(4, history, cfg.action.block_dim)
    on_meta = copy.deepcopy(tiny).to(META)
    loss = training_step(on_meta, SIGReg(num_directions=16), frames.to(META), blocks.to(META))
    assert loss.device == META
    assert all(p.grad is not None and p.grad.device == META for p in on_meta.parameters() if p.requires_grad)
    model = copy.deepcopy(tiny)
    with default_device_meta():
        loss = training_step(model, SIGReg(num_directions=16), frames, blocks)
        assert torch.isfinite(loss) and all(p.grad.device.type == "cpu" for p in model.parameters())


# ---- planning and the MPC loop ---------------------------------------------------------------------------


def planning_problem(cfg, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(cfg.predictor.history, cfg.latent_dim, generator=generator)
    blocks = (cfg.predictor.history - 1, cfg.action.frameskip, cfg.action.action_dim)
    past = 0.3 * torch.randn(blocks, generator=generator)
    return context, past, torch.randn(cfg.latent_dim, generator=generator)


@pytest.mark.parametrize("planner", ["cem", "icem", "mppi", "grad"])
def test_planner_makes_nothing_off_its_device(tiny, planner):
    """A plan (sampling, rollout, cost, refit, warm start) under a meta default device equals the plain one."""
    cfg = tiny.cfg
    settings = PlannerConfig(planner=planner, samples=24, elites=4, iterations=3, horizon=3, seed=5)
    problems = planning_problem(cfg), planning_problem(cfg, 1)  # the inputs, made outside the guard
    results = []
    for guard in (contextlib.nullcontext, default_device_meta):
        planner_ = LatentPlanner(tiny, np.zeros(2), np.ones(2), cfg.action.frameskip, cfg.predictor.history,
                                 cfg.latent_dim, settings)  # fmt: skip
        with guard():
            first = planner_.plan(*problems[0])
            planner_.advance(1)
            second = planner_.plan(*problems[1])
        results.append((first, second))
    for plain, guarded in zip(*results, strict=True):
        np.testing.assert_array_equal(guarded.plan, plain.plan)
        assert guarded.cost == plain.cost


def test_planner_with_a_roadmap_makes_nothing_off_its_device(tiny):
    from lewm_ros.planning.roadmap import Roadmap, RoadmapConfig

    cfg = tiny.cfg
    rng = np.random.default_rng(0)
    nodes = rng.normal(size=(60, cfg.latent_dim)).astype(np.float32)
    edges = np.stack([np.arange(59), np.arange(1, 60)], axis=1)
    roadmap = Roadmap(nodes, edges, link_radius=10.0, goal_radius=0.5, config=RoadmapConfig(), meta={})
    settings = PlannerConfig(samples=24, elites=4, iterations=2, horizon=3, seed=5)
    problem = planning_problem(cfg)
    results = []
    for guard in (contextlib.nullcontext, default_device_meta):
        planner = LatentPlanner(tiny, np.zeros(2), np.ones(2), cfg.action.frameskip, cfg.predictor.history,
                                cfg.latent_dim, settings)  # fmt: skip
        planner.set_roadmap(roadmap)
        with guard():
            results.append(planner.plan(*problem))
    np.testing.assert_array_equal(results[0].plan, results[1].plan)


def test_latent_mpc_makes_nothing_off_its_device(tiny):
    """Encode, goal, surprise (predict_next) and planning of the agent's MPC under a meta default device."""
    from lewm_ros.control.mpc import LatentMPC
    from lewm_ros.model.bundle import PixelEncoder

    cfg = tiny.cfg
    size = cfg.encoder.image_size
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    runs = []
    settings = PlannerConfig(samples=16, elites=4, iterations=2, horizon=3)
    for guard in (contextlib.nullcontext, default_device_meta):
        planner = LatentPlanner(tiny, np.zeros(2), np.ones(2), cfg.action.frameskip, cfg.predictor.history,
                                cfg.latent_dim, settings)  # fmt: skip
        mpc = LatentMPC(PixelEncoder(tiny).eval(), tiny, planner, receding_horizon=1)
        surprises, actions = [], []
        with guard():
            mpc.set_goal(frames[0])
            for frame in frames[1:]:
                surprises.append(mpc.observe(frame).surprise)
                mpc.plan()
                for _ in range(cfg.action.frameskip):
                    action = mpc.next_action()
                    mpc.record_executed(action)
                    actions.append(action)
        runs.append((surprises, np.array(actions)))
    assert runs[0][0] == runs[1][0] and runs[0][0][1] is not None
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
