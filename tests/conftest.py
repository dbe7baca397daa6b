"""Shared fixtures: tiny MiT shapes and inputs, so every model test runs in seconds on a CPU."""

import pytest
import torch

from cloudseg.models import MiTSpec

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
