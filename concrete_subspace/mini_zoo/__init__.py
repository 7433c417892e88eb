"""The mini zoo's code, one module per concern; :mod:`concrete_subspace.zoo` is its public face (import from there).

Modules, in the order a build runs: ``config``, ``determinism``, ``model``, ``task_data``, ``train``, ``evaluate``,
``files``, ``manifest``, ``methods``, ``build``; ``problem`` loads a built zoo as a MergeProblem.
"""
