"""GPU code paths and their CPU fallbacks.

On CUDA (skipped without a GPU): the fp16/bf16 TorchScript encoder agrees with fp32, the fp16 planner scores
like the fp32 one, CUDA graphs (torch.compile reduce-overhead) return the eager plan for a seed, the agent
configures and commands on cuda, and the doctor passes its GPU lines. On any machine: every GPU-only choice
falls back with a warning instead of crashing (reduce-overhead off CUDA, compile without Triton or failing at
its first call, fp16 on the CPU, bf16 on a GPU without it), a compiled planner's warm-up covers every shape, and
the TensorRT-friendly ONNX rewrite keeps the encoder's results (TensorRT itself is not installed here).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lewm_ros.control.settings import SettingsError, build_settings
from lewm_ros.model import precision as precision_mod
from lewm_ros.model.bundle import load_bundle
from lewm_ros.model.precision import cast_encoder, compile_fallback, precision_fallback
from lewm_ros.model.shipped import find_bundle
from lewm_ros.planning import core
from lewm_ros.planning.core import LatentPlanner, PlannerConfig, PlanningError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none here: these run where one is)")
SMALL = {"planner": "mppi", "samples": 64, "iterations": 3, "elites": 8, "horizon": 3, "seed": 3}


@pytest.fixture(scope="module")
def bundle_path():
    return find_bundle("reach2d")


def problem(bundle, device: str | torch.device = "cpu", frames: int = 3, seed: int = 0):
    """Context latents, executed blocks and a goal from encoded random frames of the bundle's size."""
    generator = torch.Generator().manual_seed(seed)
    size = bundle.image_size
    images = torch.randint(0, 256, (frames + 1, size, size, 3), dtype=torch.uint8, generator=generator)
    encoder = bundle.load_torchscript("encoder", device)
    with torch.inference_mode():
        latents = encoder(images.to(device)).float()
    fs, dim = bundle.config.action.frameskip, bundle.config.action.action_dim
    past = 0.3 * torch.randn(frames - 1, fs, dim, generator=generator)
    return latents[:frames].clone(), past, latents[frames].clone()


def planner_for(bundle, device="cpu", **changes) -> LatentPlanner:
    return LatentPlanner.from_bundle(bundle, PlannerConfig(**{**SMALL, **changes}), device)


# ---- fallbacks, on any machine -----------------------------------------------------------------------------


def test_reduce_overhead_on_the_cpu_warns_and_plans_eagerly(bundle_path):
    bundle = load_bundle(bundle_path)
    context, past, goal = problem(bundle)
    with pytest.warns(RuntimeWarning, match="CUDA graphs, which need a CUDA device"):
        graphs = planner_for(bundle, compile="reduce-overhead")
    assert graphs.compile_mode is None and len(graphs.notes) == 1
    eager = planner_for(bundle)
    np.testing.assert_array_equal(graphs.plan(context, past, goal).plan, eager.plan(context, past, goal).plan)


def test_fp16_on_the_cpu_warns_and_plans_in_fp32(bundle_path):
    bundle = load_bundle(bundle_path)
    context, past, goal = problem(bundle)
    with pytest.warns(RuntimeWarning, match="fp16 is emulated on the CPU"):
        half = planner_for(bundle, precision="fp16")
    assert half.config.precision == "fp32"
    expected = planner_for(bundle).plan(context, past, goal).plan
    np.testing.assert_array_equal(half.plan(context, past, goal).plan, expected)
    encoder = bundle.load_torchscript("encoder", "cpu")
    assert cast_encoder(encoder, torch.device("cpu"), "fp16") == (encoder, "fp32")  # the agent's CPU encoder


def test_a_compile_failure_at_the_first_call_falls_back_to_eager(bundle_path, monkeypatch):
    """A machine without a C++ compiler or with a broken Triton fails inside the first compiled call."""

    def failing_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\n(long trace)")

        return compiled

    monkeypatch.setattr(core.torch, "compile", failing_compile)
    bundle = load_bundle(bundle_path)
    context, past, goal = problem(bundle)
    planner = planner_for(bundle, compile="default")
    assert planner.compile_mode == "default"
    with pytest.warns(RuntimeWarning, match="compile default failed .*no working C\\+\\+ compiler found"):
        result = planner.plan(context, past, goal)
    assert planner.compile_mode is None
    np.testing.assert_array_equal(result.plan, planner_for(bundle).plan(context, past, goal).plan)


def test_a_compiled_planner_warms_up_every_context_length(bundle_path, monkeypatch):
    """Compilation (or CUDA-graph recording) is per input shape: warm-up must meet every context length the
    agent will plan from (1..history frames), so none is compiled mid-control."""
    shapes: list[tuple[int, int, int]] = []

    def recording_compile(fn, **kwargs):
        def compiled(context, past, candidates):
            shapes.append((context.shape[0], past.shape[0], candidates.shape[0]))
            return fn(context, past, candidates)

        return compiled

    monkeypatch.setattr(core.torch, "compile", recording_compile)
    bundle = load_bundle(bundle_path)
    planner = planner_for(bundle, compile="default", samples=16, elites=4, iterations=2)
    dim = bundle.config.latent_dim
    planner.warmup(torch.zeros(1, dim), None, torch.zeros(dim))
    warmed = set(shapes)
    history = bundle.config.predictor.history
    assert {s[0] for s in warmed} == set(range(1, history + 1))
    assert not planner.warm and planner.iteration_ms is not None
    for frames in range(1, history + 1):
        shapes.clear()
        planner.plan(*problem(bundle, frames=frames))
        assert set(shapes) <= warmed, f"{frames} context frames met a shape warm-up did not"


def test_compile_fallback_rules(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_fallback(None, cpu) == (None, None) and compile_fallback("", cuda) == (None, None)
    assert compile_fallback("default", cpu) == ("default", None)
    mode, why = compile_fallback("reduce-overhead", cpu)
    assert mode is None and "CUDA graphs" in why
    monkeypatch.setattr(precision_mod, "has_triton", lambda: False)
    mode, why = compile_fallback("reduce-overhead", cuda)
    assert mode is None and "Triton" in why and "JetPack" in why
    monkeypatch.setattr(precision_mod, "has_triton", lambda: True)
    assert compile_fallback("reduce-overhead", cuda) == ("reduce-overhead", None)
    with pytest.raises(ValueError, match="unknown compile mode"):
        compile_fallback("fastest", cpu)
    with pytest.raises(PlanningError, match="compile must be empty or one of"):
        PlannerConfig(compile="fastest").check()


def test_precision_fallback_rules(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision_fallback(cpu, "bf16") == ("bf16", None)  # supported (speed is the user's call: auto measures)
    assert precision_fallback(cpu, "fp16")[0] == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    precision, why = precision_fallback(cuda, "bf16")
    assert precision == "fp16" and "Ampere" in why
    assert precision_fallback(cuda, "fp16") == ("fp16", None)


def test_tf32_is_switched_on_for_cuda_only():
    from lewm_ros.model.precision import enable_tf32

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32  # process-wide flags: restored below
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        assert enable_tf32(torch.device("cpu")) is False
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert enable_tf32(torch.device("cuda")) is True  # only flags: no GPU needed to set them
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_agent_compile_parameter():
    base = {"joint_names": ["shoulder", "elbow"]}
    assert build_settings(base).planner_config().compile is None
    assert build_settings({**base, "compile": ""}).planner_config().compile is None
    assert build_settings({**base, "compile": "reduce-overhead"}).planner_config().compile == "reduce-overhead"
    with pytest.raises(SettingsError, match="parameter compile must be one of"):
        build_settings({**base, "compile": "fastest"})


def test_tensorrt_friendly_onnx_casts_the_input_first_and_keeps_the_results(bundle_path, tmp_path):
    """encoder_trt.onnx: same uint8 interface and latents as encoder.onnx and TorchScript, but no uint8 tensor
    past the input (TensorRT restricts uint8). Building the engine needs TensorRT, which is not installed here."""
    import shutil

    import onnx
    import onnxruntime

    from lewm_ros.model.bundle import export_encoder_onnx
    from lewm_ros.model.tensorrt import cast_input_first, trtexec_commands

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_path, copy)
    bundle = load_bundle(copy)
    source = export_encoder_onnx(bundle)
    target = cast_input_first(source, copy / "encoder_trt.onnx")
    graph = onnx.load(str(target)).graph
    assert graph.node[0].op_type == "Cast" and list(graph.node[0].input) == ["images"]
    assert all("images" not in node.input for node in graph.node[1:])
    size = bundle.image_size
    images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    run = {f: onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in (source, target)}
    original, rewritten = (run[f].run(None, {"images": images})[0] for f in (source, target))
    np.testing.assert_array_equal(original, rewritten)
    with torch.inference_mode():
        scripted = bundle.load_torchscript("encoder")(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(rewritten, scripted, atol=1e-4)
    build, timing = trtexec_commands(target, size)
    assert "--fp16" in build and f"--saveEngine={copy / 'encoder.plan'}" in build
    assert f"--maxShapes=images:4x{size}x{size}x3" in build and "--loadEngine" in timing


@pytest.fixture(scope="module")
def scene():
    from lewm_ros.envs.reach_env import ReachConfig, ReachEnv

    with ReachEnv("reach2d", ReachConfig(image_size=64)) as env:
        result = env.reset(7)
        return {"start": result.observation.pixels.copy(), "goal": env.goal_image(), "qpos": env.qpos.copy()}


def run_agent(ros_context, scene, seconds: float = 1.0, **params):
    """Configure and activate an agent with `params`, stream the start frame; return (agent, commands)."""
    from agent_rig import AgentRig

    from lewm_ros.ros import image_codec

    rig = AgentRig(ros_context, **params)
    try:
        assert str(rig.agent.trigger_configure()) == "TransitionCallbackReturnType.SUCCESS"
        rig.wait_for_subscribers()
        rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        rig.publish_joint_state(scene["qpos"])
        assert str(rig.agent.trigger_activate()) == "TransitionCallbackReturnType.SUCCESS"
        t0 = time.monotonic()
        rig.stream(scene["start"], seconds)
        commands = rig.commands_since(t0)
        diagnostics = {kv.key: kv.value for kv in rig.agent.diagnostics().values}
        notes = list(rig.agent.mpc.planner.notes)
        assert str(rig.agent.trigger_deactivate()) == "TransitionCallbackReturnType.SUCCESS"
        return diagnostics, notes, commands
    finally:
        rig.close()


def test_agent_on_the_cpu_with_gpu_settings_falls_back_and_commands(ros_context, scene):
    """jetson_arm.yaml's GPU choices on a laptop: configure succeeds, fp32 eager, commands flow."""
    with pytest.warns(RuntimeWarning):
        diagnostics, notes, commands = run_agent(ros_context, scene, device="cpu", precision="fp16",
                                                 compile="reduce-overhead")  # fmt: skip
    assert diagnostics["precision"] == "fp32" and diagnostics["device"] == "cpu"
    assert any("fp16" in n for n in notes) and any("CUDA graphs" in n for n in notes)
    assert commands and np.all(np.isfinite(np.array(commands)))


# ---- on CUDA ------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("half, tolerance", [("fp16", 1e-2), ("bf16", 5e-2)])
def test_reduced_precision_encoder_agrees_with_fp32(bundle_path, half, tolerance):
    device = torch.device("cuda")
    bundle = load_bundle(bundle_path, device=device)
    if half == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    fp32 = bundle.load_torchscript("encoder", device)
    encoder, precision = cast_encoder(bundle.load_torchscript("encoder", device), device, half)
    assert precision == half
    size = bundle.image_size
    images = torch.randint(0, 256, (8, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = fp32(images.to(device)).float()
        latents = encoder(images.to(device))
    assert latents.dtype == (torch.float16 if half == "fp16" else torch.bfloat16)
    latents = latents.float()
    error = (latents - reference).norm(dim=1) / reference.norm(dim=1)
    cosine = torch.nn.functional.cosine_similarity(latents, reference, dim=1)
    assert float(error.max()) < tolerance and float(cosine.min()) > 0.999


@needs_cuda
def test_fp16_planner_scores_like_fp32(bundle_path):
    """One iteration over the same seeded samples: the best cost found agrees within a few percent."""
    bundle = load_bundle(bundle_path, device="cuda")
    context, past, goal = problem(bundle, "cuda")
    results = {}
    for precision in ("fp32", "fp16"):
        planner = planner_for(bundle, "cuda", precision=precision, iterations=1, samples=256, elites=16)
        assert planner.config.precision == precision and not planner.notes
        results[precision] = planner.plan(context, past, goal)
    assert np.isfinite(results["fp16"].cost) and np.all(np.isfinite(results["fp16"].plan))
    assert abs(results["fp16"].cost - results["fp32"].cost) <= 0.05 * results["fp32"].cost + 1e-3


@needs_cuda
def test_cuda_graphs_plan_equals_the_eager_plan_for_a_seed(bundle_path):
    if not precision_mod.has_triton():
        pytest.skip("torch.compile on CUDA needs Triton (the fallback is tested above)")
    bundle = load_bundle(bundle_path, device="cuda")
    dim = bundle.config.latent_dim
    graphs = planner_for(bundle, "cuda", compile="reduce-overhead")
    assert graphs.compile_mode == "reduce-overhead" and not graphs.notes
    graphs.warmup(torch.zeros(1, dim), None, torch.zeros(dim))  # compiles and records every context length
    eager = planner_for(bundle, "cuda")
    for frames in (1, 3):
        context, past, goal = problem(bundle, "cuda", frames=frames, seed=frames)
        graphs.reset(7)
        eager.reset(7)
        a, b = graphs.plan(context, past, goal), eager.plan(context, past, goal)
        assert graphs.compile_mode == "reduce-overhead", graphs.notes  # no silent fallback
        np.testing.assert_allclose(a.plan, b.plan, atol=2e-3, rtol=0)
        assert a.cost == pytest.approx(b.cost, rel=1e-3, abs=1e-4)


@needs_cuda
def test_agent_configures_and_commands_on_cuda_at_fp16(ros_context, scene):
    diagnostics, notes, commands = run_agent(ros_context, scene, device="cuda", precision="fp16")
    assert diagnostics["device"].startswith("cuda") and diagnostics["precision"] == "fp16" and not notes
    values = np.array(commands)
    assert len(values) >= 10 and np.all(np.isfinite(values)) and np.any(values != 0)


@needs_cuda
def test_doctor_passes_the_gpu_lines(capsys):
    from test_doctor import rows

    from lewm_ros.cli import main

    main(["doctor", "--device", "cuda", "--precision", "fp16", "--plans", "4"])
    table = rows(capsys.readouterr().out)
    assert table["cuda"][0] == "PASS" and table["precision"][0] == "PASS"
    assert table["encoder"][0] == "PASS" and "relative error vs fp32" in table["encoder"][1]
    assert "at fp16" in table["plan latency"][1]


# ---- device correctness on CUDA (issue 19; the CPU-side guards are in test_device_guard.py) ------------------


def _train(*args) -> int:
    from lewm_ros import cli

    return cli.main(["train", *(str(a) for a in args)])


@needs_cuda
def test_train_validates_on_cuda_and_checkpoints_resume_across_devices(episodes, tmp_path):
    """Steps and the first validation on cuda (issue 19 crashed there), then the cuda checkpoint resumed on the
    CPU and that CPU checkpoint resumed on cuda to the end: the optimizer state follows the parameters."""
    from lewm_ros.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    common = ["--preset", "tiny", "--epochs", 2, "--batch-size", 8, "--no-progress", "--precision", "fp32"]
    fresh = ["--data", episodes, *common, "--out", out]
    assert _train(*fresh, "--device", "cuda", "--stop-after", 3) == 0
    state = load_checkpoint(out)
    per_epoch = state["total_steps"] // 2
    assert state["cuda_rng"] and state["step"] == 3
    resume = ["--out", out, "--resume", "--no-progress"]
    assert _train(*resume, "--device", "cpu", "--stop-after", per_epoch + 2) == 0  # crosses epoch 0's validation
    state = load_checkpoint(out)
    assert state["step"] == per_epoch + 2 and state["last_eval"]["windows"] > 0
    assert _train(*resume, "--device", "cuda") == 0
    state = load_checkpoint(out)
    assert state["step"] == state["total_steps"] and (out / "bundle" / "model.json").is_file()
    health = state["last_eval"]["health"]
    assert np.isfinite(state["last_eval"]["pred"]) and np.isfinite(health["sigreg"]) and health["eff_rank"] > 0


@needs_cuda
def test_a_training_run_from_start_to_bundle_on_cuda(episodes, tmp_path):
    out = tmp_path / "run"
    assert _train("--data", episodes, "--preset", "tiny", "--epochs", 1, "--batch-size", 8, "--no-progress",
                  "--device", "cuda", "--out", out) == 0  # fmt: skip
    bundle = load_bundle(out / "bundle")
    meta = bundle.meta["training"]
    assert meta["device"].startswith("cuda") and np.isfinite(meta["val_pred_loss"])
    import json

    assert json.loads((out / "run.json").read_text())["tf32"] is True


@needs_cuda
def test_evaluate_windows_and_latent_health_on_cuda(tiny_bundle):
    from test_device_guard import FakeBlock

    from lewm_ros.model.sigreg import SIGReg
    from lewm_ros.training.evaluate import evaluate_windows

    device = torch.device("cuda")
    model = load_bundle(tiny_bundle, device=device).model
    block = FakeBlock(model.cfg)
    windows = np.arange(len(block.frames))
    result = evaluate_windows(model, block, windows, SIGReg(64).to(device), device, "fp32", batch=5)
    reference = evaluate_windows(load_bundle(tiny_bundle).model, block, windows, SIGReg(64), torch.device("cpu"),
                                 "fp32", batch=5)  # fmt: skip
    assert result["pred"] == pytest.approx(reference["pred"], rel=1e-3)
    assert result["health"]["mean_std"] == pytest.approx(reference["health"]["mean_std"], rel=1e-3)


@needs_cuda
@pytest.mark.parametrize("planner", ["cem", "icem", "mppi", "grad"])
def test_every_planner_plans_on_cuda(bundle_path, planner):
    bundle = load_bundle(bundle_path, device="cuda")
    result = planner_for(bundle, "cuda", planner=planner).plan(*problem(bundle, "cuda"))
    assert np.isfinite(result.cost) and np.all(np.isfinite(result.plan)) and result.iterations == SMALL["iterations"]


@needs_cuda
def test_probe_roadmap_and_eval_on_cuda(tiny_bundle, episodes, tmp_path, capsys):
    import json

    from lewm_ros.cli import main

    assert main(["probe", str(tiny_bundle), "--data", str(episodes), "--device", "cuda", "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["r2_mean"])
    roadmap = tmp_path / "map.npz"
    assert main(["roadmap", "--bundle", str(tiny_bundle), "--data", str(episodes), "--stride", "5", "--device", "cuda",
                 "--out", str(roadmap)]) == 0  # fmt: skip
    out = tmp_path / "eval"
    assert main(["eval", "--bundle", str(tiny_bundle), "--episodes", "1", "--budget", "10", "--samples", "8",
                 "--iterations", "2", "--elites", "2", "--precision", "fp32", "--no-progress", "--device", "cuda",
                 "--video-episodes", "0", "--roadmap", str(roadmap), "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "eval.json").read_text())["settings"]["device"].startswith("cuda")


@needs_cuda
def test_device_cem_graph_replay_equals_the_eager_device_path_and_syncs_once(bundle_path):
    """graph=True on CUDA: chunks captured as CUDA graphs return the eager device path's plan for a seed (the same
    code without capture), capture is quick, and a plan without a deadline never synchronises mid-search
    (torch.cuda.set_sync_debug_mode('error') raises on any synchronising call before the final read)."""
    from lewm_ros.planning import device_cem as device_cem_mod

    bundle = load_bundle(bundle_path, device="cuda")
    dim = bundle.config.latent_dim
    settings = {"samples": 300, "elites": 30, "iterations": 30, "horizon": 5, "graph": True, "seed": 2}
    graphs = planner_for(bundle, "cuda", **settings)
    started = time.perf_counter()
    graphs.warmup(torch.zeros(1, dim, device="cuda"), None, torch.zeros(dim, device="cuda"))
    warmup_s = time.perf_counter() - started
    assert graphs.device_cem.graphs and not graphs.notes, graphs.notes
    assert graphs.device_cem.capture_s < 20.0, f"capture took {graphs.device_cem.capture_s:.1f} s"
    eager = planner_for(bundle, "cuda", **settings)
    eager.device_cem.use_graphs = False
    for frames in (1, 3):
        context, past, goal = problem(bundle, "cuda", frames=frames, seed=frames)
        graphs.reset(7)
        eager.reset(7)
        a, b = graphs.plan(context, past, goal), eager.plan(context, past, goal)
        np.testing.assert_allclose(a.plan, b.plan, atol=1e-4, rtol=0)
        assert a.cost == pytest.approx(b.cost, rel=1e-4)
    state = graphs.device_cem.initial_state(torch.zeros(5, graphs.block_dim, device="cuda"), 1.0)
    context, past, goal = problem(bundle, "cuda", frames=3)
    past_n = ((past.cuda() - graphs._mean_t) / graphs._std_t).reshape(2, -1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(6):
            state = graphs.device_cem._run(device_cem_mod.DEFAULT_CHUNK, state, context, past_n, goal)[:5]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(float(state[2]))
    print(f"warm-up (captures every context length) {warmup_s:.2f} s, capture {graphs.device_cem.capture_s:.2f} s")
