"""Shared test set-up: quiet runs, a non-interactive matplotlib backend, few threads."""

import os

os.environ.setdefault("REPROZOO_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Trained models and processed data go to a throw-away cache, never the user's ~/.cache/reprozoo.
if "REPROZOO_CACHE" not in os.environ:
    import tempfile

    os.environ["REPROZOO_CACHE"] = tempfile.mkdtemp(prefix="reprozoo-test-cache-")
