"""reprozoo: recent machine-learning papers as working, tested, fast software.

Importing the package is cheap: no torch, no method code. ``reprozoo.run(name, ...)`` runs a method's
experiment and writes its run folder exactly as the CLI does; use ``reprozoo.<method>`` for a method's
public API and ``reprozoo.core`` for the shared spine.
"""

__version__ = "0.1.0"

from reprozoo.core.results import Result  # noqa: E402  (after __version__, which results reads)
from reprozoo.core.run import run, run_all  # noqa: E402

__all__ = ["__version__", "Result", "run", "run_all"]
