"""import-reference: a real reference LeWM (stable-worldmodel + HF ViTModel) maps onto ours exactly."""

import re
import subprocess
import sys

import pytest
import torch
from reference_lewm import build_reference

from lewm_ros.model.bundle import load_bundle
from lewm_ros.model.reference_import import ReferenceImportError, import_reference

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SIZES = {"encoder_heads": 3, "predictor_heads": 4, "frameskip": 5}


def to_transformers_4x(state):
    """Rename HF-transformers 5.x ViT keys to the 4.x layout, as a 4.x-era checkpoint would hold them."""
    renames = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    out = {}
    for key, value in state.items():
        match = re.match(r"^encoder\.layers\.(\d+)\.(.+)$", key)
        if match:
            rest = match.group(2)
            for old, new in renames.items():
                rest = rest.replace(old, new)
            key = f"encoder.encoder.layer.{match.group(1)}.{rest}"
        out[key] = value
    return out


@pytest.fixture(scope="module")
def reference():
    return build_reference(seed=11)


@pytest.mark.parametrize("layout", ["transformers-5.x", "transformers-4.x"])
def test_outputs_match_reference(reference, layout):
    state = reference.state_dict()
    if layout == "transformers-4.x":
        state = to_transformers_4x(state)
        assert any(".attention.attention.query." in k for k in state)
    ours = import_reference(state, **SIZES)
    torch.manual_seed(2)
    pixels = torch.rand(2, 3, 3, 28, 28)  # (B, T, C, H, W) in [0, 1]
    with torch.no_grad():
        ref_latents = reference.encode({"pixels": (pixels - MEAN) / STD})["emb"]
        our_latents = ours.encode(pixels)
        torch.testing.assert_close(our_latents, ref_latents, atol=1e-4, rtol=0)

        actions = torch.randn(2, 3, 10)
        ref_pred = reference.predict(ref_latents, reference.action_encoder(actions))
        our_pred = ours.predict(our_latents, ours.embed_actions(actions))
        torch.testing.assert_close(our_pred, ref_pred, atol=1e-4, rtol=0)

        samples, horizon = 4, 5
        past = torch.randn(2, 1, 2, 10).expand(2, samples, 2, 10)
        cand = torch.randn(2, samples, horizon, 10)
        frames = ((pixels - MEAN) / STD).unsqueeze(1).expand(2, samples, 3, 3, 28, 28)
        info = reference.rollout({"pixels": frames}, torch.cat([past, cand], 2).clone(), history_size=3)
        ref_roll = info["predicted_emb"][:, :, 3:]
        our_roll = ours.rollout(our_latents, past[:, 0], cand)
        torch.testing.assert_close(our_roll, ref_roll, atol=1e-4, rtol=0)


def test_unknown_keys_are_listed(reference):
    state = dict(reference.state_dict())
    state["encoder.pooler.dense.weight"] = torch.zeros(3, 3)
    state["something.else"] = torch.zeros(1)
    with pytest.raises(ReferenceImportError, match=r"encoder\.pooler\.dense\.weight.*something\.else"):
        import_reference(state, **SIZES)


def test_missing_keys_are_listed(reference):
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("pred_proj.")}
    with pytest.raises(ReferenceImportError, match="pred_projector"):
        import_reference(state, **SIZES)


def test_wrong_head_count_is_refused(reference):
    with pytest.raises(ReferenceImportError, match="not divisible"):
        import_reference(reference.state_dict(), encoder_heads=3, predictor_heads=5, frameskip=5)


def test_cli_writes_a_bundle_that_loads_and_matches(reference, tmp_path):
    torch.save(reference.state_dict(), tmp_path / "ref.pt")
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "lewm_ros.cli", "import-reference", str(tmp_path / "ref.pt"), "--out", str(out),
           "--encoder-heads", "3", "--predictor-heads", "4", "--action-mean", "0.5", "0", "--action-std", "2", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(out)
    assert bundle.action_std.tolist() == [2.0, 1.0]
    pixels = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        ref = reference.encode({"pixels": ((pixels - MEAN) / STD).unsqueeze(1)})["emb"][:, 0]
        torch.testing.assert_close(bundle.model.encode(pixels), ref, atol=1e-4, rtol=0)
    info_cmd = [sys.executable, "-m", "lewm_ros.cli", "model-info", str(out)]
    info = subprocess.run(info_cmd, capture_output=True, text=True)
    assert info.returncode == 0 and "total" in info.stdout


def test_cli_errors_are_clear(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for path, expected in ((tmp_path / "missing.pt", "no such file"), (tmp_path / "junk.pt", "cannot read")):
        cmd = [sys.executable, "-m", "lewm_ros.cli", "import-reference", str(path), "--out", str(tmp_path / "b")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 2 and expected in result.stderr
