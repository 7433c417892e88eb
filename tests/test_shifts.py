"""The task-specific domain shifts of the mini zoo (v3; v2's kept): shape, range, determinism, and that each one changes the images."""

import numpy as np
import pytest

from concrete_subspace.data import shifts


def _images(seed: int = 0, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 3), dtype=np.float32)


@pytest.mark.parametrize("task", sorted(shifts.TASK_SHIFTS))
def test_each_shift_keeps_shape_and_range_and_changes_the_images(task):
    x = _images()
    y = shifts.apply_task_shift(task, x, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert np.abs(y - x).mean() > 0.01, f"the {task} shift leaves the images (almost) unchanged"


@pytest.mark.parametrize("task", sorted(shifts.TASK_SHIFTS))
def test_each_shift_is_deterministic_given_the_generator(task):
    x = _images()
    a = shifts.apply_task_shift(task, x, np.random.default_rng(7))
    b = shifts.apply_task_shift(task, x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_every_shift_differs_from_every_other():
    x = _images(n=8)
    out = {t: shifts.apply_task_shift(t, x, np.random.default_rng(0)) for t in shifts.TASK_SHIFTS}
    names = sorted(out)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(out[a], out[b], atol=1e-3), f"{a} and {b} shift the images alike"


def test_known_values_of_the_deterministic_shifts():
    x = np.zeros((1, 28, 28, 3), dtype=np.float32)
    x[0, 0, 0] = 1.0
    np.testing.assert_array_equal(shifts.invert(x, None)[0, 0, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(shifts.mirror(x, None)[0, 0, 27], [1.0, 1.0, 1.0])
    # a 4 x 4 block mean: one white pixel of 16 gives 1/16 in its whole block, nothing outside it
    p = shifts.pixelate(x, None)
    np.testing.assert_allclose(p[0, :4, :4], 1.0 / 16)
    assert p[0, 4:, :].max() == 0.0 and p[0, :, 4:].max() == 0.0


def test_an_unknown_task_names_the_tasks_that_have_a_shift():
    with pytest.raises(KeyError, match="no domain shift for task 'cifar'.*mnist"):
        shifts.apply_task_shift("cifar", _images(), np.random.default_rng(0))


def test_v3_changes_four_tasks_of_v2_and_is_the_default():
    x = _images(n=8)
    changed = {t for t in shifts.V3_SHIFTS if shifts.V3_SHIFTS[t] is not shifts.V2_SHIFTS[t]}
    assert changed == {"digits", "landcover", "directions", "signs"}
    medium = {t for t in shifts.MEDIUM_SHIFTS if shifts.MEDIUM_SHIFTS[t] is not shifts.V2_SHIFTS[t]}
    assert medium == changed - {"signs"}
    assert shifts.TASK_SHIFTS == shifts.V3_SHIFTS
    outs = {}
    for task in sorted(changed):
        y = shifts.V3_SHIFTS[task](x, np.random.default_rng(0)).astype(np.float32)
        assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
        assert not np.allclose(y, shifts.V2_SHIFTS[task](x, np.random.default_rng(0)), atol=1e-3), task
        outs[task] = y
    np.testing.assert_allclose(outs["landcover"], 1.0 - shifts.permute_channels(x, None), atol=1e-6)
    np.testing.assert_allclose(outs["signs"], shifts.permute_channels(shifts.pixelate(x, None), None), atol=1e-6)
    # red turns blue-ish: the recolouring is what takes the traffic signs' zero-shot away
    red = np.zeros((1, 28, 28, 3), np.float32)
    red[..., 0] = 0.8
    assert shifts.pixelate_and_permute(red, None)[0, 0, 0].argmax() == 2
