"""Registers the ``distributed`` marker (multi-process gloo tests) for --strict-markers."""


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: spawns a gloo process group (a few seconds)")
