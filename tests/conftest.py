import pytest

from dev.support.host import host_available


def pytest_collection_modifyitems(config, items):
    if host_available():
        return
    skip = pytest.mark.skip(reason="no ComfyUI test host: run `make test` (it builds one)")
    for item in items:
        if "host" in item.keywords or "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def host():
    from dev.support.comfy_run import get_host

    return get_host()
