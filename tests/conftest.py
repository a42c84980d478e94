"""Shared test setup: one torch thread, and the tiny diffusers pipelines by name.

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


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """``pipes(name)``: a tiny random-weight pipeline of test_diffusers_pipelines.BUILDERS
    ("sd", "sdxl", "sd3", "flux", "ddpm"), built once per module."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from test_diffusers_pipelines import BUILDERS

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = BUILDERS[name](tmp_path_factory)
        return cache[name]

    return get
