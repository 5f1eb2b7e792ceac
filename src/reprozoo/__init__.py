"""reprozoo: ten recent machine-learning papers as working, tested, fast software.

Importing the package is cheap: no torch, no method code. Use ``reprozoo.<method>``
for a method's public API and ``reprozoo.core`` for the shared spine.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
