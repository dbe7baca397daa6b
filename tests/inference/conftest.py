from pathlib import Path

import pytest
import torch

from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release
from cloudseg.sections import to_dict
from tests.conftest import B0


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A seeded, untrained cmx_b0 release checkpoint; tests must not modify it."""
    torch.manual_seed(0)
    return save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path_factory.mktemp("ckpt") / "best.safetensors")
