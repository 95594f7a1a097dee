"""Shared pytest set-up: offline, deterministic, and kind to a 2-core machine."""

import os

# Nothing is ever fetched from a model hub, in tests least of all.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Before torch loads libgomp: sleeping OpenMP threads (docs/bench/omp_wait.md), here and in
# the recipes the tests start; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
