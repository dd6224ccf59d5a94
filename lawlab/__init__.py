"""lawlab: compression-law studies of large language models."""

from lawlab.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
