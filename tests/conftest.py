"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The tensors in the tests are tiny: intra-op threads only add synchronization, which stalls badly on a busy
    machine. Every test module runs with one torch thread and restores the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
