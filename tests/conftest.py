"""Shared test fixtures: where the reference fixtures live, and tiny models built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
TINY_BACKBONES = ("tiny_mlp", "tiny_swiglu", "tiny_7b_like")


def tiny_config(name: str) -> dict:
    return json.loads((FIXTURES / "dinov3" / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"reference fixtures not found at {FIXTURES}"
    return FIXTURES
