"""The latent roadmap: distance along recorded latents where the plain latent distance saturates.

The synthetic world: a position t in [0, 10] seen through random Fourier features, whose squared distance
grows with |t - t'| only up to about 1 and then saturates, like LeWM's latents of far arm configurations.
"""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lewm_ros.cli import main as cli_main
from lewm_ros.planning.core import LatentPlanner, PlannerConfig, PlanningError
from lewm_ros.planning.roadmap import Roadmap, RoadmapConfig, RoadmapError

DIM = 64
_rng = np.random.default_rng(7)
FREQ = _rng.uniform(4.0, 10.0, DIM) * _rng.choice([-1.0, 1.0], DIM)  # no slow features: far pairs all look alike
PHASE = np.random.default_rng(8).uniform(0.0, 2 * np.pi, DIM)


def embed(t) -> np.ndarray:
    t = np.asarray(t, np.float64).reshape(-1, 1)
    return (np.sqrt(2.0) * np.cos(FREQ * t + PHASE)).astype(np.float32)


@pytest.fixture(scope="module")
def line_roadmap():
    positions = np.sort(np.random.default_rng(0).uniform(0, 10, 1500))
    return Roadmap.build(embed(positions), RoadmapConfig(neighbours=8)), positions


def test_roadmap_distance_grows_with_true_distance_where_the_latent_distance_saturates(line_roadmap):
    roadmap, _ = line_roadmap
    goal_t = 8.0
    goal = torch.from_numpy(embed(goal_t)[0])
    queries = np.linspace(0.2, 9.8, 200)
    z = torch.from_numpy(embed(queries))
    truth = np.abs(queries - goal_t)
    along = roadmap.cost(z, goal).numpy()
    direct = (z - goal).square().sum(1).numpy()
    far = truth > 1.5
    assert spearmanr(along[far], truth[far]).statistic > 0.95
    assert abs(spearmanr(direct[far], truth[far]).statistic) < 0.5  # the problem the roadmap solves
    assert roadmap.components == 1 and roadmap.off_map_goals == 0


def test_near_the_goal_the_cost_is_the_plain_squared_distance(line_roadmap):
    roadmap, _ = line_roadmap
    goal = torch.from_numpy(embed(5.0)[0])
    z = torch.from_numpy(embed(np.linspace(4.97, 5.03, 7)))
    direct = (z - goal).square().sum(1)
    assert (direct.sqrt() <= roadmap.goal_radius).all()
    assert torch.allclose(roadmap.cost(z, goal), direct, rtol=1e-5, atol=1e-6)
    assert roadmap.cost(goal[None], goal).item() == pytest.approx(0.0, abs=1e-6)


def test_goal_radius_is_calibrated_below_the_saturated_distance(line_roadmap):
    roadmap, positions = line_roadmap
    far_pairs = np.linalg.norm(embed(positions[:200]) - embed(positions[-200:]), axis=1)
    assert roadmap.link_radius <= roadmap.goal_radius < np.percentile(far_pairs, 5)


def test_save_load_round_trip_and_refusals(line_roadmap, tmp_path):
    roadmap, _ = line_roadmap
    roadmap.meta["weights_sha256"] = "ab" * 32
    path = roadmap.save(tmp_path / "map.npz")
    again = Roadmap.load(path, latent_dim=DIM, fingerprint="ab" * 32)
    goal = torch.from_numpy(embed(2.0)[0])
    z = torch.from_numpy(embed(np.linspace(0, 10, 50)))
    assert torch.allclose(again.cost(z, goal), roadmap.cost(z, goal), rtol=2e-2, atol=1e-2)  # fp16 nodes on disk
    with pytest.raises(RoadmapError, match="other weights"):
        Roadmap.load(path, fingerprint="cd" * 32)
    with pytest.raises(RoadmapError, match="dimension 64, the bundle's are 96"):
        Roadmap.load(path, latent_dim=96)
    with pytest.raises(RoadmapError, match="no such roadmap"):
        Roadmap.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(RoadmapError, match="not a roadmap file"):
        Roadmap.load(garbage)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RoadmapError):
        Roadmap.load(truncated)


@pytest.mark.parametrize(
    "nodes, edges, match",
    [
        (np.zeros((1, 4)), np.zeros((1, 2)), "N >= 2"),
        (np.full((3, 4), np.nan), np.array([[0, 1]]), "NaN or inf"),
        (np.zeros((3, 4)), np.array([[0, 3]]), "edge indices"),
        (np.zeros((3, 4)), np.array([[-1, 0]]), "edge indices"),
        (np.zeros((3, 4)), np.zeros((0, 2)), "E >= 1"),
    ],
)
def test_malformed_graphs_are_refused(nodes, edges, match):
    with pytest.raises(RoadmapError, match=match):
        Roadmap(nodes, edges, 1.0, 1.0, RoadmapConfig())


def test_bad_build_inputs_and_settings_are_refused():
    with pytest.raises(RoadmapError, match="more than neighbours"):
        Roadmap.build(np.zeros((5, 4), np.float32), RoadmapConfig(neighbours=10))
    bad = embed(np.linspace(0, 1, 50))
    bad[3, 0] = np.inf
    with pytest.raises(RoadmapError, match="NaN or inf"):
        Roadmap.build(bad)
    for config in (RoadmapConfig(neighbours=0), RoadmapConfig(edge_quantile=0.0), RoadmapConfig(attach=0)):
        with pytest.raises(RoadmapError):
            config.check()


def test_an_off_map_goal_is_counted_and_still_gives_finite_costs(line_roadmap):
    roadmap, _ = line_roadmap
    before = roadmap.off_map_goals
    stranger = torch.full((DIM,), 9.0)
    costs = roadmap.cost(torch.from_numpy(embed([1.0, 5.0])), stranger)
    assert roadmap.off_map_goals == before + 1 and torch.isfinite(costs).all()
    with pytest.raises(RoadmapError, match="dimension"):
        roadmap.cost(torch.zeros(2, DIM), torch.zeros(DIM + 1))


def test_separate_parts_cost_more_than_anything_reachable():
    left, right = np.linspace(0, 2, 300), np.linspace(6, 8, 300)
    roadmap = Roadmap.build(embed(np.concatenate([left, right])), RoadmapConfig(neighbours=6))
    assert roadmap.components == 2
    costs = roadmap.cost(torch.from_numpy(embed([0.5, 1.9, 7.0])), torch.from_numpy(embed(0.0)[0])).numpy()
    assert np.isfinite(costs).all() and costs[0] < costs[1] < costs[2]


class LineWorld(torch.nn.Module):
    """A position on a line moved by actions, seen through `embed`: exact dynamics for planner tests."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = np.linspace(-2, 12, 14001)
        self.grid_latents = torch.from_numpy(embed(self.grid))

    def position(self, latent: torch.Tensor) -> float:
        return float(self.grid[int(torch.cdist(latent[None].float(), self.grid_latents).argmin())])

    def rollout(self, context, past, candidates):
        start = self.position(context[0, -1])
        steps = 0.1 * candidates[0].sum(-1)  # (S, H): each action unit moves 0.1
        positions = start + steps.cumsum(1)
        freq, phase = torch.from_numpy(FREQ).float(), torch.from_numpy(PHASE).float()
        return (np.sqrt(2.0) * torch.cos(positions[..., None] * freq + phase))[None]  # differentiable `embed`


@pytest.mark.parametrize("planner", ["cem", "mppi", "grad"])
def test_a_planner_heads_for_a_far_goal_only_with_the_roadmap(line_roadmap, planner):
    roadmap, _ = line_roadmap
    world = LineWorld()
    config = PlannerConfig(planner=planner, samples=64, iterations=8, elites=8, horizon=3, seed=1)
    plain = LatentPlanner(world, np.zeros(1), np.ones(1), frameskip=2, history=1, latent_dim=DIM, config=config)
    guided = plain.with_config()
    guided.set_roadmap(roadmap)
    start, goal = torch.from_numpy(embed(2.0)[0]), torch.from_numpy(embed(8.0)[0])
    moves = {}
    for name, p in (("plain", plain), ("roadmap", guided)):
        p.reset(1)
        result = p.plan(start[None], None, goal)
        moves[name] = 0.1 * float(result.normalized.sum())  # the planned displacement over the horizon
    assert moves["roadmap"] > 0.3  # towards the goal (up to 0.6 at the action limits)
    assert moves["roadmap"] > moves["plain"] + 0.2


def test_set_roadmap_checks_the_latent_dimension(line_roadmap):
    roadmap, _ = line_roadmap
    planner = LatentPlanner(LineWorld(), np.zeros(1), np.ones(1), frameskip=2, history=1, latent_dim=DIM + 1,
                            config=PlannerConfig(samples=8, elites=2, iterations=1))  # fmt: skip
    with pytest.raises(PlanningError, match="roadmap latents have dimension 64"):
        planner.set_roadmap(roadmap)


def test_cli_builds_a_roadmap_that_eval_uses_and_refuses_another_bundles(tiny_bundle, episodes, tmp_path, capsys):
    assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--stride", "5",
                     "--out", str(tmp_path / "map.npz")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])  # the JSON line stays last, after a summary a person reads
    assert summary["nodes"] == 6 * 13 and summary["edges"] > 0  # 6 episodes of 61 frames, every 5th
    assert [line.split()[0] for line in lines[:-1]] == ["roadmap", "nodes", "edges", "radii"]
    assert f"{summary['nodes']:,} latents of 32 dims: every 5th frame of 1 file" in lines[1]
    assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--stride", "5", "--json",
                     "--out", str(tmp_path / "again.npz")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["nodes"] == summary["nodes"]  # --json: the JSON line alone
    out = tmp_path / "eval"
    code = cli_main(["eval", "--bundle", str(tiny_bundle), "--episodes", "1", "--budget", "10", "--samples", "8",
                     "--iterations", "2", "--elites", "2", "--precision", "fp32", "--no-progress",
                     "--video-episodes", "0", "--roadmap", str(tmp_path / "map.npz"), "--out", str(out)])  # fmt: skip
    assert code == 0
    assert json.loads((out / "eval.json").read_text())["settings"]["roadmap"] == str(tmp_path / "map.npz")
    other = tmp_path / "other"
    other.mkdir()
    for file in tiny_bundle.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    weights = torch.load(other / "weights.pt", weights_only=True)
    first = next(iter(weights))
    weights[first] = weights[first] + 0.01
    torch.save(weights, other / "weights.pt")
    capsys.readouterr()
    assert cli_main(["eval", "--bundle", str(other), "--episodes", "1", "--budget", "5", "--no-progress",
                     "--roadmap", str(tmp_path / "map.npz")]) == 2  # fmt: skip
    assert "other weights" in capsys.readouterr().err
    assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(tmp_path / "none.h5")]) == 2
    assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--stride", "0"]) == 2
    assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--out",
                     str(tmp_path / "no" / "dir" / "map.npz")]) == 2  # refused before any encoding  # fmt: skip
    if not torch.cuda.is_available():
        assert cli_main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--device", "cuda"]) == 2
    capsys.readouterr()
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a roadmap")
    assert cli_main(["eval", "--bundle", str(tiny_bundle), "--episodes", "1", "--roadmap", str(garbage)]) == 2
    assert "not a roadmap file" in capsys.readouterr().err
