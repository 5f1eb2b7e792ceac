"""Shared test set-up: quiet runs, a non-interactive matplotlib backend, few threads."""

import os

os.environ.setdefault("REPROZOO_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
