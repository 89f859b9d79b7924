import os
import sys
from pathlib import Path

import pytest
import torch

# One intra-op thread for the whole test process: the tensors are tiny, and switching thread
# counts mid-process (or two threads on a busy core) makes small ops many times slower.
torch.set_num_threads(1)

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def toy_demo_file(tmp_path):
    from helpers import write_bimodal

    return write_bimodal(tmp_path / "toy.hdf5")
