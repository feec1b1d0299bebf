"""Shared test fixtures: the official-parity fixture folder and a tiny model config."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mask2anomaly.config import Config, load_config

FIXTURE_DIR = Path(
    os.environ.get(
        "MASK2ANOMALY_FIXTURES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official-parity",
    )
)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def official_fixture() -> tuple[ModuleType, dict]:
    """(make_weights module, expected tensors) of the official-parity fixture."""
    if not (FIXTURE_DIR / "make_weights.py").exists():
        if os.environ.get("CI"):  # CI always has shared/ beside the checkout
            pytest.fail(f"official-parity fixture not found at {FIXTURE_DIR}")
        pytest.skip(f"official-parity fixture not found at {FIXTURE_DIR}")
    spec = importlib.util.spec_from_file_location("make_weights", FIXTURE_DIR / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = torch.load(FIXTURE_DIR / "expected_seed1_256x512.pt", weights_only=True)
    return module, expected


@pytest.fixture()
def tiny_config() -> Config:
    return load_config("tiny")
