import importlib.util

import pytest
import torch

# What each marker needs (pyproject.toml [tool.pytest.ini_options] says what it means): a marked test is skipped,
# with the reason, when one is missing, so `pip install -e ".[test]"` without an extra still runs everything else.
NEEDS = {
    "segmentation": ("mmseg", "the seg extra: mmsegmentation with a compiled mmcv (scripts/setup.sh)"),
    "video": ("decord", "the video extra: decord"),
    "clip": ("open_clip", "the clip extra: open_clip_torch"),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    missing = {mark: why for mark, (module, why) in NEEDS.items() if importlib.util.find_spec(module) is None}
    cuda = torch.cuda.is_available()
    for item in items:
        if not cuda and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        for mark, why in missing.items():
            if item.get_closest_marker(mark):
                item.add_marker(pytest.mark.skip(reason=f"needs {why}"))
