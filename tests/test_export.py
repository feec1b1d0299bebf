"""ONNX export: onnxruntime outputs equal PyTorch, and `predict --backend onnxruntime` equals the
PyTorch predictor (issue 7). The dynamic-size and R50 exports take minutes: marked slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mask2anomaly.checkpoint import load_model, save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import load_config
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.model import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from mask2anomaly.inference.export import OnnxNetwork, export_onnx, onnx_max_differences  # noqa: E402

TOLERANCE = 1e-4
SMALL = ["inference.min_size=64", "inference.max_size=96", "inference.flip=False"]


def _checkpoint(directory: Path, name: str = "tiny", overrides: list[str] = SMALL) -> Path:
    torch.manual_seed(0)
    cfg = load_config(name, overrides)
    path = directory / f"{name}.pt"
    save_checkpoint(path, build_model(cfg.model), cfg)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, static ONNX export at 64x96) of the tiny config, via the command."""
    directory = tmp_path_factory.mktemp("export")
    checkpoint = _checkpoint(directory)
    onnx_path = directory / "tiny.onnx"
    args = ["export", "--weights", str(checkpoint), "--out", str(onnx_path), "--no-verify"]
    assert main([*args, "--height", "64", "--width", "96"]) == 0
    return checkpoint, onnx_path


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_tiny_onnx_equals_pytorch(exported):
    checkpoint, onnx_path = exported
    network = OnnxNetwork(onnx_path)
    differences = onnx_max_differences(load_model(checkpoint), network, _images(2, 64, 96))
    assert max(differences.values()) <= TOLERANCE, differences


def test_onnxruntime_predictor_equals_torch_predictor(exported, tmp_path):
    checkpoint, onnx_path = exported
    image = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)  # -> 64x96
    torch_prediction = Predictor.from_checkpoint(checkpoint).predict(image)
    network = OnnxNetwork(onnx_path)
    cfg = network.config
    onnx_prediction = Predictor(network, scoring=cfg.scoring, inference=cfg.inference).predict(
        image
    )
    for field in ("anomaly_score", "anomaly_score_unrefined", "refinement_keep"):
        np.testing.assert_allclose(
            getattr(onnx_prediction, field), getattr(torch_prediction, field), atol=TOLERANCE
        )
    np.testing.assert_array_equal(onnx_prediction.semantic, torch_prediction.semantic)


def test_predict_command_with_onnxruntime(exported, tmp_path, capsys):
    _, onnx_path = exported
    from PIL import Image

    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(tmp_path / "fits.png")
    Image.fromarray(np.zeros((90, 60, 3), np.uint8)).save(tmp_path / "portrait.png")
    args = ["predict", "--backend", "onnxruntime", "--onnx", str(onnx_path)]
    rc = main(
        [*args, str(tmp_path / "fits.png"), str(tmp_path / "portrait.png")]
        + [
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 1  # the portrait image does not fit the static export
    assert (tmp_path / "out" / "fits_anomaly.npy").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "portrait.png" in warnings[0] and "--dynamic" in warnings[0]


def test_bad_onnx_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (tmp_path / "a.png").write_bytes(b"")
    args = ["predict", "--backend", "onnxruntime", "--onnx", str(tmp_path / "bad.onnx")]
    assert main([*args, str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    assert "bad.onnx: not a loadable ONNX model" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_dynamic_export_fits_several_sizes(tmp_path):
    model = load_model(_checkpoint(tmp_path))
    cfg = load_config("tiny", SMALL)
    export_onnx(model, cfg, tmp_path / "dynamic.onnx", height=64, width=96, dynamic=True)
    network = OnnxNetwork(tmp_path / "dynamic.onnx")
    for batch, height, width in ((2, 64, 96), (1, 96, 64), (3, 32, 160)):
        differences = onnx_max_differences(model, network, _images(batch, height, width))
        assert max(differences.values()) <= TOLERANCE, (batch, height, width, differences)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True])
def test_r50_export_equals_pytorch(tmp_path, dynamic):
    """Random R50 weights, the official global masked attention, at 128x256
    (observed: class 2e-6, mask 7e-6)."""
    torch.manual_seed(0)
    cfg = load_config("cityscapes_r50")
    model = build_model(cfg.model).eval()
    export_onnx(model, cfg, tmp_path / "r50.onnx", height=128, width=256, dynamic=dynamic)
    network = OnnxNetwork(tmp_path / "r50.onnx")
    differences = onnx_max_differences(model, network, _images(1, 128, 256))
    assert max(differences.values()) <= TOLERANCE, differences


def _max_output_change(model, images: torch.Tensor, relative: float) -> float:
    """Largest change of the final logits when the input is scaled by (1 + relative)."""
    with torch.no_grad():
        a, b = model(images), model(images * (1 + relative))
    return max(
        float((a.class_logits - b.class_logits).abs().max()),
        float((a.mask_logits - b.mask_logits).abs().max()),
    )


@pytest.mark.slow
def test_r50_export_at_256x512_equals_pytorch_where_the_network_is_continuous(tmp_path):
    """At 256x512 the masked attention's hard cut (sigmoid < 0.5) makes the network itself
    discontinuous: with random R50 weights, a 1e-6 relative change of the input moved PyTorch's
    own final logits by 1.5e-4 (1 thread; some attention-mask pixel flips, every earlier
    prediction moved by < 1e-5; with 2 threads that input happened to stay clear of the cut),
    so no second runtime can promise 1e-4 there. Everything else in the graph (the backbone,
    the deformable pixel decoder, the query decoder) is checked at this size with the cut
    removed (cross_attention=cross): within 1e-4 of PyTorch."""
    images = _images(1, 256, 512)
    cfg = load_config("cityscapes_r50", ["model.decoder.cross_attention=cross"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    assert _max_output_change(model, images, 1e-6) < 1e-5  # continuous without the cut
    export_onnx(model, cfg, tmp_path / "r50.onnx", height=256, width=512)
    differences = onnx_max_differences(model, OnnxNetwork(tmp_path / "r50.onnx"), images)
    assert max(differences.values()) <= TOLERANCE, differences
