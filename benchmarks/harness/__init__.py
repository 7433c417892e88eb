"""Benchmarks of the test-time merge loops (issue 5): time per optimisation step, peak memory, task-vector build time.

Every (case, method) pair runs in a fresh subprocess so that memory peaks never mix. Inside it the method runs
through the ordinary registry (``run_method``) with logging, evaluation and checkpointing off; two functions of the
method modules are wrapped to read clocks without changing what is computed: ``optimise`` (each step function is
timed) and ``prepare_vectors`` (task-vector build time). Peak memory is the process RSS high-water mark (Linux
``VmHWM``, reset after the problem is built so the build and the loop have separate peaks; ``ru_maxrss`` otherwise)
on CPU, and ``torch.cuda.max_memory_allocated`` on a GPU.

Cases: ``mini`` (the mini zoo when it is built, else the smoke zoo, else skipped with a message) and ``vit_b32``
(a randomly initialised ViT-B/32-sized ``transformers`` CLIP vision tower, 8 synthetic task vectors made one at a
time, zero-shot-style random heads, random 224x224 images, 16 per task per step). Results of the fusion_bench
comparison (benchmarks/fusion_bench_bench.py, run in its own virtualenv) are joined when present.

Modules: :mod:`.cases` (what is measured), :mod:`.measure` (the clocks and memory marks around one run),
:mod:`.driver` (subprocess per run, table, CLI: ``make bench`` / ``python -m benchmarks.harness`` from the repository
root). This harness is a research tool, not part of the installed library: it lives beside the other benchmark scripts.
"""

from .cases import (  # noqa: F401
    ALL_CASES,
    CASES,
    DEFAULT_STEPS,
    VIT_B32,
    VIT_CASES,
    VIT_TINY,
    ViTCase,
    mini_problem,
    synthetic_finetuned,
    synthetic_heads,
    synthetic_images,
    vit_encoder,
    vit_problem,
)
from .driver import RESULTS_DIR, compare, format_table, load_reference, main, run_bench  # noqa: F401
from .measure import (  # noqa: F401
    BENCH_METHODS,
    DEFAULT_CONFIGS,
    Probe,
    current_rss,
    instrumented,
    machine_info,
    measure,
    method_params,
    parse_config,
    peak_rss,
    reset_peak_rss,
    select_configs,
    versions,
)
