"""`mask2anomaly export --weights CKPT --format onnx --out model.onnx`: the network as ONNX,
checked against PyTorch with onnxruntime when it is installed (issue 7)."""

from __future__ import annotations

import argparse
import importlib.util

from ..errors import UserError
from .common import bounded_int

# The opsets torch's exporter (torch.onnx.export with dynamo, torch 2.13) writes without
# converting: lower ones would be silently raised.
OPSETS = (18, 23)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the network to ONNX",
        description="Export the network (normalised, padded image batch -> class and mask "
        "logits of the final prediction). Pre- and post-processing stay in Python: run the "
        "file with `mask2anomaly predict --backend onnxruntime --onnx FILE`.",
    )
    parser.add_argument("--weights", required=True, help="native checkpoint (.pt)")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--out", required=True, help="file to write (.onnx)")
    parser.add_argument(
        "--height",
        type=bounded_int(32),
        help="padded input height, a multiple of 32 (default: inference.min_size, rounded up)",
    )
    parser.add_argument(
        "--width",
        type=bounded_int(32),
        help="padded input width, a multiple of 32 (default: inference.max_size, rounded up)",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="batch, height and width free (multiples of 32) instead of fixed",
    )
    parser.add_argument(
        "--opset",
        type=bounded_int(*OPSETS),
        help=f"ONNX opset, {OPSETS[0]}..{OPSETS[1]} (default: torch's)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check"
    )
    parser.set_defaults(func=run)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import load_checkpoint_config, load_model
    from ..inference.export import OnnxNetwork, export_onnx, onnx_max_differences

    cfg = load_checkpoint_config(args.weights)
    model = load_model(args.weights)
    divisibility = model.size_divisibility
    height = args.height or _round_up(cfg.inference.min_size, divisibility)
    width = args.width or _round_up(cfg.inference.max_size, divisibility)
    export_onnx(
        model, cfg, args.out, height=height, width=width, dynamic=args.dynamic, opset=args.opset
    )
    kind = "dynamic batch and size" if args.dynamic else f"input 1x3x{height}x{width}"
    print(f"wrote {args.out} ({kind})")
    if args.no_verify:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime not installed: not verified (pip install 'mask2anomaly[export]')")
        return 0
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    differences = onnx_max_differences(model, OnnxNetwork(args.out), images)
    print(
        "onnxruntime vs PyTorch, max |difference|: "
        + ", ".join(f"{name} {value:.2e}" for name, value in differences.items())
    )
    if max(differences.values()) > 1e-3:
        raise UserError(f"{args.out}: onnxruntime outputs differ from PyTorch (see above)")
    return 0
