"""The mini scale's task data, one module per concern; :mod:`concrete_subspace.data.mini` is its public face.

Modules: ``drawing`` (canvas, shapes, corruption), ``real`` (mnist, digits), ``procedural`` (the six generated
tasks), ``tasks`` (task specs, licences), ``splits`` (split sizes and images), ``pretraining`` (image-caption pairs,
vocabulary).
"""

from __future__ import annotations

# Public names for the tests' checks of the real tasks' splits. The modules keep the underscored names because the
# shipped zoo's recipe fingerprint hashes their source (see concrete_subspace/mini_zoo/shared.py).
from .real import _mnist_arrays as mnist_arrays
from .splits import _real_split_indices as real_split_indices

__all__ = ["mnist_arrays", "real_split_indices"]
