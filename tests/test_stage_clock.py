"""StageClock: the build_seconds of both zoo builds (consecutive stages, then the total)."""

import time

from concrete_subspace.provenance import StageClock


def test_laps_are_consecutive_and_the_total_covers_them():
    clock = StageClock()
    time.sleep(0.05)
    clock.lap("data")
    clock.lap("pretrain")  # an empty stage: the clock restarted at the previous lap
    time.sleep(0.05)
    clock.lap("finetune")
    seconds = clock.total()
    assert list(seconds) == ["data", "pretrain", "finetune", "total"]
    assert seconds["data"] >= 0.05 - 0.01 and seconds["finetune"] >= 0.05 - 0.01 and seconds["pretrain"] < 0.05
    assert seconds["total"] >= seconds["data"] + seconds["finetune"] - 0.1
