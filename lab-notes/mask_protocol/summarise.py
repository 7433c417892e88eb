"""Print the validation probes of issue 26 (probes_validation.jsonl) as a table: final accuracy, the meta stage at w',
and the mask alone (stage 2 at step 0, the learned mask at the initial coefficients). Task arithmetic at λ 0.3 on
this validation split: 64.4 (the shipped zoo's manifest)."""

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("probes_validation.jsonl"))
print(f"{'method':32} {'params':72} {'seed':>4} {'final':>6}  {'mask alone':>10}  meta stage at w' (every 50 steps)")
for line in path.read_text().splitlines():
    row = json.loads(line)
    curve = row["curve"]
    meta = [p[2] for p in curve if p[0] == "meta"]
    mask_alone = next((p[2] for p in curve if p[0] == "tta" and p[1] == 0), None) if meta else None
    params = " ".join(f"{k}={v}" for k, v in row["params"].items())
    alone = f"{mask_alone:10.2f}" if mask_alone is not None else f"{'-':>10}"
    print(f"{row['name']:32} {params:72} {row['seed']:>4} {row['average']:6.2f}  {alone}  {meta}")
