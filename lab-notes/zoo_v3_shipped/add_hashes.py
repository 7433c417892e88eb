"""One-off, kept as run: the shipped zoo v3 was built by `concrete-subspace zoo build --seed 0` at afc9b57 (the
recipe is unchanged since), whose manifest predates the hashes that builds now record. This adds them: the weight
files' sha256, each task's data hash computed from the SAVED datasets (what the build trained and evaluated on),
the recipe fingerprint of the current code and the kernel path of this machine (where the build ran).

    OMP_NUM_THREADS=1 .venv/bin/python lab-notes/zoo_v3_shipped/add_hashes.py ~/.cache/concrete_subspace/zoo/mini-v5-seed0
"""

import json
import sys
from pathlib import Path

from concrete_subspace import zoo
from concrete_subspace.mini_zoo import shipped

zoo_dir = Path(sys.argv[1])
manifest = zoo.read_manifest(zoo_dir)
data = {
    t: {s: tuple(a.numpy() for a in zoo.load_task_split(zoo_dir, t, s)) for s in zoo.SPLITS}
    for t in manifest["task_names"]
}
regenerated = shipped.task_data_hashes(zoo.generate_task_data(zoo.mini_config(), manifest["seed"], progress=False))
saved = shipped.task_data_hashes(data)
assert saved == regenerated, "the saved datasets differ from the regenerated ones"
manifest.update(
    data_sha256=saved,
    recipe_fingerprint=shipped.recipe_fingerprint(zoo.mini_config()),
    kernel=shipped.kernel_path(),
    files=shipped.zoo_file_hashes(zoo_dir),
)
(zoo_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=True))
print(json.dumps({k: manifest[k] for k in ("kernel", "recipe_fingerprint")}, indent=1))
