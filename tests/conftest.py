import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def toy_demo_file(tmp_path):
    from helpers import write_bimodal

    return write_bimodal(tmp_path / "toy.hdf5")
