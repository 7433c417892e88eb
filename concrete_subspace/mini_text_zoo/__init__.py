"""The mini-text zoo's code, one module per concern; :mod:`concrete_subspace.text_zoo` is its public face.

Modules, in the order a build runs: ``config``, ``encoder``, ``task_data``, ``train``, ``manifest``, ``evaluate``,
``build``; ``problem`` loads a built zoo as a MergeProblem. Helpers shared with the image zoo (deterministic
kernels, atomic manifest writes, the learning-rate schedule, the entropy premise) come from
:mod:`concrete_subspace.mini_zoo`.
"""
