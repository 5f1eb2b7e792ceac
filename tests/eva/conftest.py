"""Markers used by the eva tests (distributed: spawns torchrun processes)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: launches several processes with torchrun (gloo on CPU)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
