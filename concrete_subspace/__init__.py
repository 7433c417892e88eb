"""concrete_subspace: Concrete Subspace Learning for multi-task model merging (Tang et al., arXiv 2312.06173)."""
