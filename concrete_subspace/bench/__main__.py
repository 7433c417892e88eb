"""``python -m concrete_subspace.bench``: the benchmark CLI (also the per-run worker subprocess)."""

from .driver import main

raise SystemExit(main())
