"""LeWM modules: shapes, dtypes, causality, AdaLN-zero identity, shared-prefix rollout == recompute."""

import pytest
import torch

from lewm_ros.model import LeWM, preset
from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.predictor import ConditionalBlock

TINY = LeWMConfig.from_dict(
    {
        "latent_dim": 32,
        "projector_hidden": 64,
        "encoder": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "mlp_dim": 64},
        "predictor": {"layers": 2, "heads": 2, "dim_head": 16, "mlp_dim": 64, "dropout": 0.0, "history": 3},
        "action": {"action_dim": 2, "frameskip": 5},
    }
)


def trained_like(cfg: LeWMConfig, seed: int = 0) -> LeWM:
    """A model whose AdaLN modulations are non-zero, so actions actually influence predictions."""
    torch.manual_seed(seed)
    model = LeWM(cfg).eval()
    with torch.no_grad():
        for block in model.dynamics.predictor.blocks:
            block.modulation.weight.normal_(0, 0.5)
            block.modulation.bias.normal_(0, 0.2)
    return model


def test_encode_accepts_uint8_float_nchw_nhwc_and_time_axes():
    model = trained_like(TINY)
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)  # (B, T, H, W, 3)
    with torch.no_grad():
        z_nhwc = model.encode(frames)
        z_nchw = model.encode(frames.permute(0, 1, 4, 2, 3))
        z_float = model.encode(frames.float() / 255.0)
    assert z_nhwc.shape == (2, 3, 32) and z_nhwc.dtype == torch.float32
    torch.testing.assert_close(z_nhwc, z_nchw)
    torch.testing.assert_close(z_nhwc, z_float, atol=1e-5, rtol=1e-5)


def test_encode_resizes_other_sizes_and_rejects_bad_channels():
    model = trained_like(TINY)
    with torch.no_grad():
        assert model.encode(torch.randint(0, 256, (1, 48, 40, 3), dtype=torch.uint8)).shape == (1, 32)
    with pytest.raises(ValueError, match="3 colour channels"):
        model.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError):
        model.encode(torch.zeros(32, 32))


def test_predict_shapes_and_action_block_width_is_checked():
    model = trained_like(TINY)
    z = torch.randn(4, 3, 32)
    emb = model.embed_actions(torch.randn(4, 3, 10))
    assert emb.shape == (4, 3, 32)
    assert model.predict(z, emb).shape == (4, 3, 32)
    with pytest.raises(ValueError, match="10 features"):
        model.embed_actions(torch.randn(4, 3, 7))


def test_causality_later_action_never_changes_earlier_prediction():
    model = trained_like(TINY)
    z = torch.randn(3, 3, 32)
    actions = torch.randn(3, 3, 10)
    changed = actions.clone()
    changed[:, 2] += 3.0
    with torch.no_grad():
        base = model.predict(z, model.embed_actions(actions))
        after = model.predict(z, model.embed_actions(changed))
    torch.testing.assert_close(base[:, :2], after[:, :2], atol=0, rtol=0)
    assert (base[:, 2] - after[:, 2]).abs().max() > 1e-3  # the action does matter for its own step


def test_rollout_changing_block_k_only_changes_predictions_from_k_on():
    model = trained_like(TINY)
    ctx, past = torch.randn(1, 3, 32), torch.randn(1, 2, 10)
    cand = torch.randn(1, 2, 5, 10)
    changed = cand.clone()
    changed[:, :, 3] += 2.0
    with torch.no_grad():
        base, after = model.rollout(ctx, past, cand), model.rollout(ctx, past, changed)
    torch.testing.assert_close(base[:, :, :3], after[:, :, :3], atol=0, rtol=0)
    assert (base[:, :, 3:] - after[:, :, 3:]).abs().max() > 1e-3


def test_adaln_zero_block_starts_as_identity():
    torch.manual_seed(0)
    block = ConditionalBlock(dim=32, heads=2, dim_head=16, mlp_dim=64, dropout=0.1).train()
    x, cond = torch.randn(4, 3, 32), torch.randn(4, 3, 32)
    out, _, _ = block(x, cond, None, None)
    torch.testing.assert_close(out, x, atol=0, rtol=0)
    with torch.no_grad():
        block.modulation.bias.normal_()
    assert not torch.equal(block(x, cond, None, None)[0], x)  # and the test can fail


@pytest.mark.parametrize("name", ["reach64", "paper"])
@pytest.mark.parametrize("n_ctx", [1, 2, 3])
def test_shared_prefix_rollout_equals_full_window_recompute(name, n_ctx):
    cfg = preset(name)
    model = trained_like(cfg, seed=n_ctx)
    dim, block = cfg.latent_dim, cfg.action.block_dim
    ctx = torch.randn(2, n_ctx, dim)
    past = torch.randn(2, n_ctx - 1, block)
    cand = torch.randn(2, 6, 5, block)
    with torch.no_grad():
        fast = model.rollout(ctx, past, cand)
        slow = model.rollout_recompute(ctx, past, cand)
    assert fast.shape == (2, 6, 5, dim)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_rollout_input_validation():
    model = trained_like(TINY)
    ctx, past, cand = torch.randn(1, 3, 32), torch.randn(1, 2, 10), torch.randn(1, 4, 5, 10)
    with pytest.raises(ValueError, match="history"):
        model.rollout(torch.randn(1, 4, 32), torch.randn(1, 3, 10), cand)
    with pytest.raises(ValueError, match="past_actions"):
        model.rollout(ctx, torch.randn(1, 1, 10), cand)
    with pytest.raises(ValueError, match="candidates"):
        model.rollout(ctx, past, torch.randn(1, 4, 10))
    with pytest.raises(ValueError, match="context"):
        model.rollout(torch.randn(1, 3, 31), past, cand)


def test_bf16_autocast_rollout_stays_close_to_fp32():
    model = trained_like(TINY)
    ctx, past, cand = torch.randn(1, 3, 32), torch.randn(1, 2, 10), torch.randn(1, 8, 5, 10)
    with torch.no_grad():
        ref = model.rollout(ctx, past, cand)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.rollout(ctx, past, cand)
    assert low.shape == ref.shape
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_paper_preset_parameter_counts_match_the_paper():
    from lewm_ros.model.cli import parameter_counts

    counts = parameter_counts(LeWM(preset("paper")))
    assert 17.5e6 < counts["total"] < 18.5e6
    assert 5.3e6 < counts["encoder"] < 5.7e6
    assert 10.6e6 < counts["predictor"] < 11.0e6


def test_config_round_trip_and_bad_configs():
    cfg = preset("paper")
    assert LeWMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        LeWMConfig.from_dict({**cfg.to_dict(), "latent": 3})
    with pytest.raises(ValueError, match="multiple"):
        LeWMConfig.from_dict({"encoder": {"image_size": 30, "patch_size": 14}})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
