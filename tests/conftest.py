"""Shared fixtures: tiny MiT shapes and inputs, so every model test runs in seconds on a CPU."""

import os
from pathlib import Path

import pytest
import torch

from cloudseg.config import Config, ModelConfig
from cloudseg.models import MiTSpec

# An unforeseen error in a command raises with its traceback, in this process and in the commands tests start,
# instead of becoming a one-line message and exit code 1 that a test could take for a handled failure.
os.environ.setdefault("CLOUDSEG_DEBUG", "1")


@pytest.fixture
def user_view(monkeypatch):
    """The command line as a user sees it: one line per error, no traceback."""
    monkeypatch.delenv("CLOUDSEG_DEBUG", raising=False)


# The defaults' recipe with the CPU-sized model, for checkpoints and tasks that tests build.
B0 = Config(model=ModelConfig(name="cmx_b0"))

# Widths <= 32 and two blocks in one stage, so block indexing is exercised.
TINY_SPEC = MiTSpec(widths=(8, 16, 24, 32), depths=(1, 2, 1, 1), heads=(1, 2, 3, 4))


@pytest.fixture
def tiny_spec() -> MiTSpec:
    return TINY_SPEC


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB and a one-band aux batch of odd size (2, C, 97, 130)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 97, 130, generator=generator), torch.randn(2, 1, 97, 130, generator=generator)


SHARED_L8 = Path(__file__).resolve().parents[2] / "shared" / "data" / "l8biome"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (8 train, 2 test scenes of 64²); tests must not modify it."""
    from cloudseg.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), n_train=8, n_test=2, size=64, seed=0)


@pytest.fixture
def l8biome():
    """The shared Landsat-8 sample (read-only); tests using it skip where it is absent, and fail if they wrote
    anything there."""
    if not (SHARED_L8 / "train").is_dir():
        pytest.skip(f"{SHARED_L8} is not present")

    def stamps() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in SHARED_L8.parent.rglob("*")}

    before = stamps()
    yield SHARED_L8
    assert stamps() == before, f"a test wrote into {SHARED_L8.parent}"
