import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0 or not shutil.which("ip"):
        skip = pytest.mark.skip(reason="the lab needs root and iproute2")
        for item in items:
            item.add_marker(skip)
