"""concrete_subspace: Concrete Subspace Learning for multi-task model merging (Tang et al., arXiv 2312.06173)."""

__version__ = "0.1.0"

# Import order matters once: merging defines the pure functions that adamerging/concrete import, then registers them.
from . import merging  # noqa: E402,F401
