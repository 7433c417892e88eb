"""Print the probe table of docs/zoo.md from the probe JSON files in this folder (validation split)."""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
PROBES = [  # file, what changed against the v1 recipe (Adam lr 1.5e-3, 700 steps, v1 corruption levels, head x learned scale 19.3)
    ("p_2e-4", "Adam lr 2e-4"),
    ("p_5e-4", "Adam lr 5e-4"),
    ("q_5e-4", "stronger task corruption, Adam lr 5e-4"),
    ("q_1e-3", "stronger task corruption, Adam lr 1e-3"),
    ("s_0.03", "SGD (momentum 0.9) lr 0.03"),
    ("s_0.1", "SGD (momentum 0.9) lr 0.1"),
    ("h_2e-4", "heads x 100 (CLIP's logit scale), Adam lr 2e-4"),
    ("h_5e-4", "heads x 100, Adam lr 5e-4"),
    ("h_1e-3", "heads x 100, Adam lr 1e-3"),
    ("h_1.5e-3", "heads x 100, Adam lr 1.5e-3"),
]


def avg(d: dict) -> tuple[float, float]:
    return float(np.mean([v[0] for v in d.values()])), float(np.mean([v[1] for v in d.values()]))


def main() -> None:
    print(
        "| probe | change | zero-shot | individual | own τ at 0.3 | TA 0.05 | TA 0.1 | TA 0.2 | TA 0.3 | TA 0.5 "
        "| TA entropy 0.1 / 0.3 / 0.5 | ‖τ‖/‖θ0‖ | mean cos(τi, τj) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, change in PROBES:
        r = json.loads((HERE / f"{name}.json").read_text())
        ta = {float(k): avg(v) for k, v in r["ta"].items()}
        norm = r.get("norm", np.mean(list(r.get("tau_norm_rel", {0: float("nan")}).values())))
        print(
            f"| {name} | {change} | {avg(r['zero_shot'])[0]:.1f} | {avg(r['individual'])[0]:.1f} | {avg(r['single_0.3'])[0]:.1f} | "
            + " | ".join(f"{ta[l][0]:.1f}" for l in (0.05, 0.1, 0.2, 0.3, 0.5))
            + f" | {ta[0.1][1]:.2f} / {ta[0.3][1]:.2f} / {ta[0.5][1]:.2f} | {norm:.3f} | {r['mean_cos']:.3f} |"
        )


if __name__ == "__main__":
    main()
