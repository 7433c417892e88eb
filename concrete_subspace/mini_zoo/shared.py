"""The mini zoo's helpers that the mini-text zoo and research scripts share, under their public names.

They are defined in :mod:`.determinism` and :mod:`.train` under underscored names, and stay so there: the shipped
zoo's recipe fingerprint (:func:`.shipped.recipe_fingerprint`) hashes those modules' source, so renaming them in
place would mark the shipped weights stale and call for a 24-minute rebuild that reproduces the same weights.
"""

from __future__ import annotations

from .determinism import _seeded_init as seeded_init
from .train import _cosine_lr as cosine_lr

__all__ = ["cosine_lr", "seeded_init"]
