"""``python -m benchmarks.harness`` (from the repository root): the benchmark CLI (also the per-run worker subprocess)."""

from .driver import main

raise SystemExit(main())
