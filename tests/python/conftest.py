import os
import sys
import zlib

import numpy as np
import pytest

# reference.py, cases.py and helpers.py sit beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: larger shapes (deselect with -m 'not slow')")


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's id: fixed per test, different for every case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
