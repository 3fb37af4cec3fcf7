"""The reference LeWM (stable-worldmodel 0.1.1, installed --no-deps as a test-only dependency), built
with an HF-transformers ViTModel encoder, random weights everywhere (AdaLN included) so a wrong mapping
cannot hide behind zero-initialised parameters.

The package's __init__ pulls gymnasium/torchvision; we load only its `wm/lewm` folder.
"""

import importlib.util
import sys
from pathlib import Path

import torch


def load_reference_package():
    spec = importlib.util.find_spec("stable_worldmodel")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("stable-worldmodel is not installed (make test installs it --no-deps)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "wm" / "lewm"
    name = "reference_lewm_pkg"
    if name in sys.modules:
        return sys.modules[name]
    pkg_spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(pkg_spec)
    sys.modules[name] = package
    pkg_spec.loader.exec_module(package)
    return package


def build_reference(
    image_size=28, patch=14, width=48, enc_layers=2, enc_heads=3, enc_mlp=96, pred_layers=2, pred_heads=4,
    dim_head=16, pred_mlp=64, num_frames=4, frameskip=5, action_dim=2, proj_hidden=64, seed=0,
):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    ref = load_reference_package()
    module = importlib.import_module("reference_lewm_pkg.module")
    encoder = ViTModel(
        ViTConfig(
            image_size=image_size, patch_size=patch, hidden_size=width, num_hidden_layers=enc_layers,
            num_attention_heads=enc_heads, intermediate_size=enc_mlp,
        ),
        add_pooling_layer=False,
    )
    predictor = module.Predictor(
        num_frames=num_frames, depth=pred_layers, heads=pred_heads, mlp_dim=pred_mlp, input_dim=width,
        hidden_dim=width, dim_head=dim_head, dropout=0.1,
    )
    action_encoder = module.Embedder(input_dim=frameskip * action_dim, smoothed_dim=10, emb_dim=width)
    projector = module.MLP(width, proj_hidden, width, norm_fn=torch.nn.BatchNorm1d)
    pred_proj = module.MLP(width, proj_hidden, width, norm_fn=torch.nn.BatchNorm1d)
    model = ref.LeWM(encoder, predictor, action_encoder, projector, pred_proj)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaLN" in name or "cls_token" in name or "position" in name:
                param.normal_(0, 0.2)
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.normal_(0, 0.3)
            elif buffer_name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()
