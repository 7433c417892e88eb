"""The mini scale's task data, one module per concern; :mod:`concrete_subspace.data.mini` is its public face.

Modules: ``drawing`` (canvas, shapes, corruption), ``real`` (mnist, digits), ``procedural`` (the six generated
tasks), ``tasks`` (task specs, licences), ``splits`` (split sizes and images), ``pretraining`` (image-caption pairs,
vocabulary).
"""
