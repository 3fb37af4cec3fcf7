"""Bundles: round trip, TorchScript in a clean interpreter, ONNX and torch.export parity, clear errors."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_model import TINY, trained_like

from lewm_ros.model import LeWM
from lewm_ros.model.bundle import (
    FORMAT_VERSION,
    BundleError,
    export_encoder_onnx,
    export_encoder_pt2,
    load_bundle,
    save_bundle,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    model = trained_like(TINY, seed=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(model, path, action_mean=[0.1, -0.2], action_std=[0.5, 2.0])
    return path


def images(n=3, size=32, seed=0):
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_round_trip_preserves_outputs_and_metadata(bundle_dir):
    bundle = load_bundle(bundle_dir)
    meta = json.loads((bundle_dir / "model.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["frameskip"] == 5 and meta["action_dim"] == 2
    np.testing.assert_allclose(bundle.action_mean, [0.1, -0.2])
    np.testing.assert_allclose(bundle.denormalize_actions(bundle.normalize_actions([[1.0, 2.0]])), [[1.0, 2.0]])
    fresh = LeWM(bundle.config)
    fresh.load_state_dict(torch.load(bundle_dir / "weights.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(bundle.model.encode(images()), fresh.eval().encode(images()))


def test_torchscript_loads_in_plain_torch_and_matches_eager(bundle_dir, tmp_path):
    bundle = load_bundle(bundle_dir)
    ctx, past, cand = torch.randn(1, 3, 32), torch.randn(1, 2, 10), torch.randn(1, 6, 4, 10)
    with torch.no_grad():
        expected = {
            "latents": bundle.model.encode(images()),
            "rollout": bundle.model.rollout(ctx, past, cand),
            "step": bundle.model.dynamics(ctx, torch.randn(1, 3, 10, generator=torch.Generator().manual_seed(1))),
        }
    torch.save({"images": images(), "ctx": ctx, "past": past, "cand": cand, **expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        io = torch.load({str(tmp_path / "io.pt")!r})
        enc = torch.jit.load({str(bundle_dir / "encoder.ts")!r})
        dyn = torch.jit.load({str(bundle_dir / "predictor.ts")!r})
        with torch.no_grad():
            torch.testing.assert_close(enc(io["images"]), io["latents"], atol=1e-5, rtol=1e-5)
            rollout = dyn.rollout(io["ctx"], io["past"], io["cand"])
            torch.testing.assert_close(rollout, io["rollout"], atol=1e-5, rtol=1e-5)
            step = dyn(io["ctx"], torch.randn(1, 3, 10, generator=torch.Generator().manual_seed(1)))
            torch.testing.assert_close(step, io["step"], atol=1e-5, rtol=1e-5)
        assert not any(m.startswith("lewm_ros") for m in sys.modules), "TorchScript needed lewm_ros"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_onnx_and_torch_export_match_eager(bundle_dir, tmp_path):
    import shutil

    import onnxruntime

    work = tmp_path / "copy"
    shutil.copytree(bundle_dir, work)
    bundle = load_bundle(work)
    batch = images(n=5, seed=4)
    with torch.no_grad():
        expected = bundle.model.encode(batch).numpy()
    onnx_file = export_encoder_onnx(bundle)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": batch.numpy()})[0], expected, atol=1e-4, rtol=1e-4)
    program = torch.export.load(str(export_encoder_pt2(bundle))).module()
    with torch.no_grad():
        np.testing.assert_allclose(program(batch).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_load_to_bfloat16(bundle_dir):
    bundle = load_bundle(bundle_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        z = bundle.model.encode(images())
    assert z.dtype == torch.bfloat16 and torch.isfinite(z.float()).all()


# ---- bad bundles: each a clear BundleError ------------------------------------------------------


@pytest.fixture
def broken(bundle_dir, tmp_path):
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(bundle_dir, copy)
    return copy


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")


def test_missing_model_json(broken):
    (broken / "model.json").unlink()
    with pytest.raises(BundleError, match=r"missing model\.json"):
        load_bundle(broken)


def test_corrupt_json(broken):
    (broken / "model.json").write_text("{ not json")
    with pytest.raises(BundleError, match="corrupt JSON"):
        load_bundle(broken)


def test_unsupported_version(broken):
    meta = json.loads((broken / "model.json").read_text())
    meta["format_version"] = 99
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="version 99"):
        load_bundle(broken)


def test_missing_weights(broken):
    (broken / "weights.pt").unlink()
    with pytest.raises(BundleError, match=r"missing weights\.pt"):
        load_bundle(broken)


def test_truncated_weights(broken):
    data = (broken / "weights.pt").read_bytes()
    (broken / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupt or unreadable"):
        load_bundle(broken)


def test_weights_from_another_config(broken):
    meta = json.loads((broken / "model.json").read_text())
    meta["config"]["predictor"]["mlp_dim"] = 128
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"size the config claims for config.predictor.mlp_dim = 128: "):
        load_bundle(broken)


def test_bad_action_normalisation(broken):
    meta = json.loads((broken / "model.json").read_text())
    meta["action_normalization"]["std"] = [1.0, 0.0]
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="positive"):
        load_bundle(broken)


def test_corrupt_torchscript(broken):
    (broken / "encoder.ts").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="TorchScript"):
        load_bundle(broken).load_torchscript("encoder")


def test_save_rejects_bad_stats(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        save_bundle(trained_like(TINY), tmp_path / "b", action_mean=[0.0], action_std=[1.0])


def test_save_leaves_the_callers_model_untouched(tmp_path):
    model = trained_like(TINY).train().to(torch.bfloat16)
    save_bundle(model, tmp_path / "b")
    assert model.training and next(model.parameters()).dtype == torch.bfloat16
    assert load_bundle(tmp_path / "b").model.encoder.cls_token.dtype == torch.float32
