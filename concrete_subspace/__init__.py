"""concrete_subspace: Concrete Subspace Learning for multi-task model merging (Tang et al., arXiv 2312.06173)."""

__version__ = "0.1.0"  # the one declaration of the version (pyproject.toml reads it)
