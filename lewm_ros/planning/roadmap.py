"""A roadmap of recorded latents: a goal cost that still points the way when the goal is far.

Why: LeWM's latent distance is informative only near the goal. On reach2d the squared distance grows with
the joint error up to about 0.3-0.5 rad and then saturates: every far configuration looks equally far, so
the final-latent cost gives the planner no direction and random goals fail (docs/planning.md). The latents of
recorded frames lie on the arm's configuration manifold; linking each to its near neighbours (short edges,
where the latent distance is trustworthy) and measuring distance along the graph (shortest paths, as Isomap
does) gives a distance that keeps growing with the joint error.

Cost of a predicted latent z for goal g (a squared distance, so it reads like the plain cost):
    (min over z's `attach` nearest nodes n of  geo(n, g) + |z - z_n|)^2,
except within `goal_radius` of the goal, where it is the plain |z - g|^2 (the radius is calibrated at build
time: the straight-line distance that far-apart configurations almost never show). geo(n, g) is the
shortest path from node n to the goal, which joins the graph through those of its `attach` nearest nodes
within `goal_radius`.
The goal's distances are computed once per goal (one Dijkstra: tens of milliseconds for 6,300 nodes) and
cached.

A roadmap is built from the latents of one bundle's encoder and is only valid with that encoder: the file
records a fingerprint of the bundle's weights and `load` refuses another bundle's roadmap.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree
from torch import Tensor

ROADMAP_FILE = "roadmap.npz"
FORMAT_VERSION = 1
MAX_NODES = 200_000  # the kNN build is O(N^2) distance work; beyond this, subsample (a larger --stride)
MAX_FILE_BYTES = 512 * 2**20


class RoadmapError(ValueError):
    """A roadmap that cannot be built, read or used with this bundle; the message says why."""


@dataclass(frozen=True)
class RoadmapConfig:
    neighbours: int = 10  # k of the kNN graph
    edge_quantile: float = 0.3  # kNN edges longer than this quantile of all kNN distances are dropped
    attach: int = 5  # nodes a predicted latent may join the graph through

    def check(self) -> None:
        if not 1 <= self.neighbours <= 256:
            raise RoadmapError(f"neighbours must be in 1..256, got {self.neighbours}")
        if not 0.0 < self.edge_quantile <= 1.0:
            raise RoadmapError(f"edge_quantile must be in (0, 1], got {self.edge_quantile}")
        if not 1 <= self.attach <= 256:
            raise RoadmapError(f"attach must be in 1..256, got {self.attach}")


def weights_fingerprint(bundle_path: str | Path) -> str:
    """sha256 of the bundle's weights file: a roadmap's latents are only valid with these weights."""
    digest = hashlib.sha256()
    with open(Path(bundle_path) / "weights.pt", "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def nearest_neighbours(nodes: Tensor, k: int, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Distances and indices of each node's k nearest other nodes, in row chunks (no N x N matrix)."""
    dists, index = [], []
    for start in range(0, len(nodes), chunk):
        block = torch.cdist(nodes[start : start + chunk], nodes)
        rows = torch.arange(start, min(start + chunk, len(nodes)))
        block[rows - start, rows] = math.inf
        d, i = block.topk(k, dim=1, largest=False)
        dists.append(d)
        index.append(i)
    return torch.cat(dists), torch.cat(index)


class Roadmap:
    """Graph over recorded latents; `cost(latents, goal)` is the planner's goal cost (module docstring)."""

    def __init__(self, nodes: np.ndarray, edges: np.ndarray, link_radius: float, goal_radius: float,
                 config: RoadmapConfig, meta: dict[str, Any] | None = None) -> None:  # fmt: skip
        config.check()
        nodes = np.asarray(nodes, np.float32)
        edges = np.asarray(edges, np.int64)
        if nodes.ndim != 2 or len(nodes) < 2:
            raise RoadmapError(f"nodes must be (N >= 2, D) latents, got shape {nodes.shape}")
        if len(nodes) > MAX_NODES:
            raise RoadmapError(f"{len(nodes)} nodes is over the limit of {MAX_NODES}; subsample the frames")
        if not np.isfinite(nodes).all():
            raise RoadmapError("node latents contain NaN or inf")
        if edges.ndim != 2 or edges.shape[1] != 2 or len(edges) < 1:
            raise RoadmapError(f"edges must be (E >= 1, 2) node index pairs, got shape {edges.shape}")
        if edges.min() < 0 or edges.max() >= len(nodes):
            raise RoadmapError(f"edge indices must be in 0..{len(nodes) - 1}")
        for name, value in (("link_radius", link_radius), ("goal_radius", goal_radius)):
            if not (math.isfinite(value) and value > 0):
                raise RoadmapError(f"{name} must be finite and > 0, got {value}")
        self.nodes_np, self.edges, self.config = nodes, edges, config
        self.link_radius = float(link_radius)  # the longest kNN edge kept: how far the latent distance is trusted
        self.goal_radius = float(goal_radius)
        self.meta = dict(meta or {})
        self.nodes = torch.from_numpy(nodes)
        lengths = np.linalg.norm(nodes[edges[:, 0]] - nodes[edges[:, 1]], axis=1)
        # zero-length edges (duplicate frames) would vanish from a sparse matrix: keep them as tiny lengths
        graph = csr_matrix((np.maximum(lengths, 1e-6), (edges[:, 0], edges[:, 1])), shape=(len(nodes),) * 2)
        self.graph = graph.maximum(graph.T).tocsr()
        self.components = int(connected_components(self.graph, directed=False)[0])
        self._goal_key: bytes | None = None
        self._goal_geo: Tensor | None = None
        self._device_nodes: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}  # nodes, norms², geo
        self.off_map_goals = 0  # goals beyond goal_radius of every node: distances from their nearest node

    @property
    def latent_dim(self) -> int:
        return int(self.nodes_np.shape[1])

    # ---- building ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, latents: np.ndarray, config: RoadmapConfig | None = None, meta: dict[str, Any] | None = None,
              sequences: np.ndarray | None = None) -> Roadmap:  # fmt: skip
        """kNN graph over `latents` (N, D) without the longest (1 - edge_quantile) of its edges, plus the
        edges a minimum spanning tree needs to keep it in one piece. `sequences` (N,) names the episode of
        each latent, in recorded order: consecutive latents of an episode are linked (the arm did move from
        one to the next), and the spanning tree joins episodes through their shortest kNN edges.

        Why so few kNN edges: on reach2d, 2% of the 10-NN edges within the 0.95 quantile join configurations
        more than 0.3 rad apart (the encoder confuses some elbow angles), and each such shortcut makes far
        goals look near; within the 0.3 quantile, 0.1% do, and the episodes' own links keep the graph whole."""
        config = config or RoadmapConfig()
        config.check()
        nodes = np.asarray(latents, np.float32)
        if nodes.ndim != 2 or len(nodes) <= config.neighbours:
            raise RoadmapError(f"need more than neighbours={config.neighbours} latents, got shape {nodes.shape}")
        if len(nodes) > MAX_NODES:
            raise RoadmapError(f"{len(nodes)} frames is over the limit of {MAX_NODES}; use a larger --stride")
        if not np.isfinite(nodes).all():
            raise RoadmapError("latents contain NaN or inf")
        dist, index = nearest_neighbours(torch.from_numpy(nodes), config.neighbours)
        cap = float(torch.quantile(dist.flatten().double(), config.edge_quantile))
        rows = np.repeat(np.arange(len(nodes)), config.neighbours)
        cols = index.numpy().reshape(-1)
        lengths = np.maximum(dist.numpy().reshape(-1), 1e-6)
        keep = lengths <= cap
        parts = [np.stack([rows[keep], cols[keep]], axis=1)]
        links = np.zeros((0, 2), np.int64)
        if sequences is not None:
            sequences = np.asarray(sequences).reshape(-1)
            if len(sequences) != len(nodes):
                raise RoadmapError(f"sequences has {len(sequences)} entries for {len(nodes)} latents")
            same = np.flatnonzero(sequences[1:] == sequences[:-1])
            links = np.stack([same, same + 1], axis=1)
            parts.append(links)
        # the spanning tree takes episode links first (near-zero weight), then the shortest kNN edges
        weights = np.concatenate([lengths, np.full(len(links), 1e-9)])
        heads, tails = np.concatenate([rows, links[:, 0]]), np.concatenate([cols, links[:, 1]])
        candidates = csr_matrix((weights, (heads, tails)), shape=(len(nodes),) * 2)
        tree = minimum_spanning_tree(candidates.maximum(candidates.T)).tocoo()
        parts.append(np.stack([tree.row, tree.col], axis=1))
        edges = np.unique(np.sort(np.concatenate(parts).astype(np.int64), axis=1), axis=0)
        edges = edges[edges[:, 0] != edges[:, 1]]
        radius = calibrate_goal_radius(nodes, edges, cap)
        return cls(nodes, edges, link_radius=cap, goal_radius=radius, config=config, meta=meta)

    # ---- files ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {**self.meta, "format_version": FORMAT_VERSION, "config": asdict(self.config),
                "link_radius": self.link_radius, "goal_radius": self.goal_radius}  # fmt: skip
        with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez_compressed(handle, nodes=self.nodes_np.astype(np.float16), edges=self.edges.astype(np.int32),
                                meta=np.array(json.dumps(meta)))  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path, latent_dim: int | None = None, fingerprint: str | None = None) -> Roadmap:
        """Read and check a roadmap file; with `fingerprint`, refuse one built with other weights."""
        path = Path(path)
        if not path.is_file():
            raise RoadmapError(f"{path}: no such roadmap file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise RoadmapError(f"{path}: {path.stat().st_size} bytes is over the limit of {MAX_FILE_BYTES}")
        try:
            with np.load(path, allow_pickle=False) as data:
                nodes, edges, meta_text = data["nodes"], data["edges"], str(data["meta"])
        except Exception as err:  # zipfile, numpy and KeyError failures for a corrupt or foreign file
            raise RoadmapError(f"{path}: not a roadmap file ({type(err).__name__}: {err})") from err
        try:
            meta = json.loads(meta_text)
            version, config = meta["format_version"], RoadmapConfig(**meta["config"])
            link_radius, goal_radius = float(meta["link_radius"]), float(meta["goal_radius"])
        except Exception as err:
            raise RoadmapError(f"{path}: unreadable roadmap metadata ({type(err).__name__}: {err})") from err
        if version != FORMAT_VERSION:
            raise RoadmapError(f"{path}: format version {version}, this lewm_ros reads {FORMAT_VERSION}")
        if nodes.dtype.kind != "f" or edges.dtype.kind not in "iu":
            raise RoadmapError(f"{path}: nodes must be floats and edges integers")
        try:
            roadmap = cls(nodes, edges, link_radius, goal_radius, config, meta)
        except RoadmapError as err:
            raise RoadmapError(f"{path}: {err}") from err
        if latent_dim is not None and roadmap.latent_dim != latent_dim:
            raise RoadmapError(f"{path}: latents of dimension {roadmap.latent_dim}, the bundle's are {latent_dim}")
        if fingerprint is not None and meta.get("weights_sha256") != fingerprint:
            raise RoadmapError(
                f"{path}: built with other weights (sha256 {str(meta.get('weights_sha256'))[:12]}, this bundle "
                f"{fingerprint[:12]}); rebuild it with `lewm-ros roadmap`"
            )
        return roadmap

    # ---- the cost ---------------------------------------------------------------------------------

    def goal_distances(self, goal: Tensor) -> Tensor:
        """Shortest-path length from every node to `goal` (N,), cached for the last goal."""
        g = goal.detach().float().cpu().reshape(-1)
        if g.shape[0] != self.latent_dim:
            raise RoadmapError(f"goal latent has dimension {g.shape[0]}, the roadmap's {self.latent_dim}")
        key = g.numpy().tobytes()
        if key == self._goal_key and self._goal_geo is not None:
            return self._goal_geo
        direct = torch.cdist(g[None], self.nodes)[0]
        near, index = direct.topk(min(self.config.attach, len(direct)), largest=False)
        joined = near <= self.goal_radius
        if not bool(joined.any()):
            self.off_map_goals += 1
            joined[0] = True  # the goal is off the recorded map: the nearest node stands in for it
        n = len(self.nodes_np)
        # the goal as node n, attached to its near nodes; one Dijkstra from it
        heads = np.concatenate([np.full(int(joined.sum()), n), index[joined].numpy()])
        tails = np.concatenate([index[joined].numpy(), np.full(int(joined.sum()), n)])
        lengths = np.maximum(np.tile(near[joined].numpy(), 2), 1e-6)
        extra = csr_matrix((lengths, (heads, tails)), shape=(n + 1, n + 1))
        padded = csr_matrix((self.graph.data, self.graph.indices, np.append(self.graph.indptr, self.graph.nnz)),
                            shape=(n + 1, n + 1))  # fmt: skip
        geo = dijkstra(padded + extra, indices=n)[:n]
        unreachable = ~np.isfinite(geo)
        if unreachable.any():  # another component: farther than anything reachable, ordered by direct distance
            reach = geo[~unreachable].max() if (~unreachable).any() else 0.0
            geo[unreachable] = reach + direct.numpy()[unreachable]
        self._goal_key, self._goal_geo = key, torch.from_numpy(geo.astype(np.float32))
        self._device_nodes.clear()
        return self._goal_geo

    def cost(self, latents: Tensor, goal: Tensor) -> Tensor:
        """Squared roadmap distance of latents (M, D) to goal (D,); differentiable in `latents`."""
        geo = self.goal_distances(goal)
        device = latents.device
        if device not in self._device_nodes:
            nodes = self.nodes.to(device)
            self._device_nodes[device] = (nodes, nodes.square().sum(1), geo.to(device))
        nodes, node_norms, geo_d = self._device_nodes[device]
        z = latents.float()
        # squared distances by one matmul; the square root only for the few nearest (the matmul is most of the
        # time: 320 latents x 6300 nodes ~ 8 ms on one AVX2 core)
        squared = torch.addmm(node_norms, z, nodes.T, alpha=-2.0).add_(z.square().sum(1, keepdim=True))
        near, index = squared.topk(min(self.config.attach, len(nodes)), dim=1, largest=False)
        via = (geo_d[index] + near.clamp_min(1e-12).sqrt()).min(dim=1).values
        direct = (z - goal.to(device).float().reshape(1, -1)).norm(dim=1)
        close = direct <= self.goal_radius
        return torch.where(close, direct, via).square()

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": len(self.nodes_np), "edges": len(self.edges), "latent_dim": self.latent_dim,
            "components": self.components, "link_radius": self.link_radius, "goal_radius": self.goal_radius,
        }  # fmt: skip


def calibrate_goal_radius(nodes: np.ndarray, edges: np.ndarray, link_radius: float, sources: int = 64,
                          seed: int = 0, far_quantile: float = 0.001) -> float:  # fmt: skip
    """The latent distance below which two latents are almost surely near along the manifold.

    Far pairs (geodesic distance above the median, from a few Dijkstra sources) have straight-line distances
    piled up at the saturated value; the radius is their `far_quantile` quantile, so a direct distance below
    it is rarely one of them. Never below `link_radius`, the distance the graph's links already trust.
    """
    n = len(nodes)
    lengths = np.maximum(np.linalg.norm(nodes[edges[:, 0]] - nodes[edges[:, 1]], axis=1), 1e-6)
    graph = csr_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n))
    picks = np.random.default_rng(seed).choice(n, size=min(sources, n), replace=False)
    geo = dijkstra(graph.maximum(graph.T), indices=picks)
    direct = np.linalg.norm(nodes[picks][:, None, :] - nodes[None, :, :], axis=2)
    reached = np.isfinite(geo) & (geo > 0)
    if reached.sum() < 100:
        return link_radius
    far = reached & (geo > np.median(geo[reached]))
    return max(link_radius, float(np.quantile(direct[far], far_quantile)))
