"""Shared test setup.

Every model in the suite is tiny: intra-op threads gain nothing, and on a loaded 2-core machine
idle OpenMP threads spin and slow small ops down by orders of magnitude. One thread for the whole
session, restored at the end.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
