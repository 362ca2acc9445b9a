"""tradectl's engine: signals in, orders out (docs/architecture.md)."""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it): `tradectl --version` prints it
