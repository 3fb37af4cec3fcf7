"""The encoder's ONNX export made friendly to TensorRT, and the trtexec commands that build and time an engine.

`lewm-ros export BUNDLE --onnx` writes encoder.onnx with the bundle's interface: uint8 pixels (B, H, W, 3) in,
latents out, the cast to float inside the graph after a transpose. TensorRT restricts uint8 tensors (older
releases accept them only as network inputs that are cast straight away), so this module rewrites the graph
to cast the input first: every consumer then sees float32, the interface (uint8 in) and the results stay the
same (a test compares them with onnxruntime). TensorRT itself is not installed here: the engine build is
documented (docs/jetson.md), not tested.

    python -m lewm_ros.model.tensorrt BUNDLE    # writes BUNDLE/encoder_trt.onnx, prints the trtexec commands
"""

from __future__ import annotations

import sys
from pathlib import Path

TRT_ONNX = "encoder_trt.onnx"
ENGINE = "encoder.plan"


def cast_input_first(source: str | Path, target: str | Path) -> Path:
    """Copy of the ONNX model whose uint8 input is cast to float32 before anything else reads it."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    if len(graph.input) != 1:
        raise ValueError(f"{source}: expected one input (images), found {len(graph.input)}")
    name = graph.input[0].name
    if graph.input[0].type.tensor_type.elem_type != TensorProto.UINT8:
        raise ValueError(f"{source}: input {name!r} is not uint8; nothing to rewrite")
    as_float = f"{name}_float"
    for node in graph.node:
        node.input[:] = [as_float if value == name else value for value in node.input]
    graph.node.insert(0, helper.make_node("Cast", [name], [as_float], to=TensorProto.FLOAT, name="images_to_float"))
    del graph.value_info[:]  # intermediate types recorded by the exporter (uint8 after the transpose) are stale
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    out = Path(target)
    onnx.save(model, str(out))
    return out


def trtexec_commands(onnx_file: str | Path, image_size: int, max_batch: int = 4) -> list[str]:
    """Build an fp16 engine for batch 1..max_batch at the bundle's image size, then time it."""
    shape = f"images:{{}}x{image_size}x{image_size}x3"
    engine = Path(onnx_file).with_name(ENGINE)
    return [
        f"trtexec --onnx={onnx_file} --fp16 --saveEngine={engine} --minShapes={shape.format(1)} "
        f"--optShapes={shape.format(1)} --maxShapes={shape.format(max_batch)}",
        f"trtexec --loadEngine={engine} --shapes={shape.format(1)} --iterations=200 --avgRuns=50",
    ]


def main(argv: list[str] | None = None) -> int:
    """Export encoder.onnx if missing, write encoder_trt.onnx, print the trtexec commands."""
    from lewm_ros.model.bundle import ENCODER_ONNX, BundleError, export_encoder_onnx, load_bundle

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lewm_ros.model.tensorrt BUNDLE", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args[0])
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = bundle.path / ENCODER_ONNX
    if not source.is_file():
        source = export_encoder_onnx(bundle)
    target = cast_input_first(source, bundle.path / TRT_ONNX)
    print(f"wrote {target}")
    for command in trtexec_commands(target, bundle.image_size):
        print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
