import os

import pytest
import torch

# Keep the suite deterministic and light on this 2-core machine.
torch.manual_seed(0)


@pytest.fixture(scope="session")
def registry():
    from harness.registry import discover

    return discover()


def cuda_only():
    return pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="needs a CUDA device: torch.cuda.is_available() is False here")
