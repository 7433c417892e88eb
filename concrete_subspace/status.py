"""Status lines of the library (runs cached or computed, averages, downloads) go through :mod:`logging`.

Library modules log to ``logging.getLogger(__name__)`` (children of ``concrete_subspace``) and never print; the
notebooks (:func:`experiments.setup`) and ``concrete-subspace download`` call :func:`show_status` to show them.
"""

from __future__ import annotations

import logging
import sys


def show_status(level: int = logging.INFO) -> None:
    """Show the library's status lines on stdout as plain messages (idempotent: one handler per process)."""
    logger = logging.getLogger("concrete_subspace")
    if not any(getattr(h, "concrete_subspace_status", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.concrete_subspace_status = True
        logger.addHandler(handler)
    logger.setLevel(level)
