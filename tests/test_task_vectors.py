"""Task vectors: arithmetic, validation errors that name the key, streaming into a flat [T, P] matrix, the flat layout."""

from __future__ import annotations

import warnings

import pytest
import torch

from concrete_subspace.task_vectors import (
    ParamLayout,
    StateDictError,
    ZeroTaskVectorWarning,
    apply_to,
    check_compatible,
    check_finite,
    float_keys,
    stack_task_vectors,
    task_vector,
    weighted_sum,
)


def tiny_state(offset: float = 0.0) -> dict[str, torch.Tensor]:
    """Two float tensors and an integer buffer (which must be skipped)."""
    return {
        "a.weight": torch.arange(6.0).reshape(2, 3) + offset,
        "a.bias": torch.tensor([1.0, -1.0]) + offset,
        "ids": torch.arange(3),
    }


def test_task_vector_is_difference_of_float_tensors_only():
    pre, ft = tiny_state(), tiny_state(0.5)
    tv = task_vector(pre, ft)
    assert set(tv) == {"a.weight", "a.bias"}  # integer buffer skipped
    assert torch.equal(tv["a.weight"], torch.full((2, 3), 0.5))
    assert torch.equal(tv["a.bias"], torch.full((2,), 0.5))


def test_apply_to_adds_scaled_vector_and_keeps_other_entries():
    pre = tiny_state()
    tv = {"a.weight": torch.ones(2, 3), "a.bias": torch.ones(2)}
    out = apply_to(pre, tv, 0.25)
    assert torch.equal(out["a.weight"], pre["a.weight"] + 0.25)
    assert out["ids"] is pre["ids"]
    assert torch.equal(pre["a.bias"], torch.tensor([1.0, -1.0]))  # input not mutated


def test_apply_to_with_zero_scaling_gives_pretrained():
    pre = tiny_state()
    out = apply_to(pre, task_vector(pre, tiny_state(3.0)), 0.0)
    assert all(torch.equal(out[k], pre[k]) for k in pre)


def test_weighted_sum_by_hand():
    v1 = {"x": torch.tensor([1.0, 2.0])}
    v2 = {"x": torch.tensor([10.0, -4.0])}
    assert torch.equal(weighted_sum([v1, v2], [0.5, 0.25])["x"], torch.tensor([3.0, 0.0]))
    with pytest.raises(ValueError, match="2 task vectors but 1 weights"):
        weighted_sum([v1, v2], [1.0])


def test_missing_key_is_named():
    ft = tiny_state(1.0)
    del ft["a.bias"]
    with pytest.raises(StateDictError, match=r"missing key 'a\.bias'"):
        task_vector(tiny_state(), ft, name="ft")


def test_extra_key_is_named():
    ft = tiny_state(1.0)
    ft["b.weight"] = torch.zeros(1)
    with pytest.raises(StateDictError, match=r"unexpected key 'b\.weight'"):
        task_vector(tiny_state(), ft)


def test_shape_mismatch_is_named_with_both_shapes():
    ft = tiny_state(1.0)
    ft["a.weight"] = torch.zeros(3, 2)
    with pytest.raises(StateDictError, match=r"shape mismatch for 'a\.weight': \(3, 2\) vs pre-trained \(2, 3\)"):
        task_vector(tiny_state(), ft)


def test_dtype_mismatch_is_named():
    ft = tiny_state(1.0)
    ft["a.bias"] = ft["a.bias"].half()
    with pytest.raises(StateDictError, match=r"dtype mismatch for 'a\.bias': torch\.float16"):
        task_vector(tiny_state(), ft)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_finetuned_is_refused(bad):
    ft = tiny_state(1.0)
    ft["a.weight"][1, 2] = bad
    with pytest.raises(StateDictError, match=r"non-finite values \(NaN/Inf\) in 'a\.weight'"):
        task_vector(tiny_state(), ft, name="fine-tuned model 'x'")


def test_errors_are_one_line():
    ft = tiny_state(1.0)
    ft["a.weight"] = torch.zeros(3, 2)
    with pytest.raises(StateDictError) as info:
        check_compatible(tiny_state(), ft, name="m")
    assert "\n" not in str(info.value)


def test_zero_task_vector_warns():
    with pytest.warns(ZeroTaskVectorWarning, match="all zeros"):
        task_vector(tiny_state(), tiny_state())


def test_nonzero_task_vector_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task_vector(tiny_state(), tiny_state(1e-3))


def test_stack_task_vectors_streams_one_row_per_task():
    pre = tiny_state()
    offsets = {"t1": 1.0, "t2": -2.0}
    loaded = []

    def load(task):
        loaded.append(task)
        return tiny_state(offsets[task])

    layout, stacked = stack_task_vectors(pre, load, ["t1", "t2"])
    assert loaded == ["t1", "t2"]
    assert layout.keys == ("a.weight", "a.bias")
    assert stacked.shape == (2, 8)
    assert torch.equal(stacked[0], torch.full((8,), 1.0)) and torch.equal(stacked[1], torch.full((8,), -2.0))


def test_stack_task_vectors_bfloat16_storage():
    pre = tiny_state()
    _, stacked = stack_task_vectors(pre, lambda t: tiny_state(0.1), ["t"], dtype=torch.bfloat16)
    assert stacked.dtype == torch.bfloat16
    assert torch.allclose(stacked.float(), torch.full((1, 8), 0.1), atol=1e-3)


def test_stack_task_vectors_validates_each_model_and_names_the_task():
    def load(task):
        state = tiny_state(1.0)
        if task == "bad":
            state["a.bias"] = torch.tensor([float("nan"), 0.0])
        return state

    with pytest.raises(StateDictError, match=r"fine-tuned model 'bad': non-finite values \(NaN/Inf\) in 'a\.bias'"):
        stack_task_vectors(tiny_state(), load, ["good", "bad"])
    with pytest.warns(ZeroTaskVectorWarning, match="'same'"):
        stack_task_vectors(tiny_state(), lambda t: tiny_state(), ["same"])


def test_non_finite_pretrained_is_refused():
    pre = tiny_state()
    pre["a.weight"][0, 0] = float("nan")
    with pytest.raises(StateDictError, match=r"pre-trained model: non-finite values \(NaN/Inf\) in 'a\.weight'"):
        stack_task_vectors(pre, lambda t: tiny_state(1.0), ["t"])
    with pytest.raises(StateDictError, match="pre-trained model"):
        check_finite(pre, name="pre-trained model")


def test_layout_roundtrip_and_segments():
    state = tiny_state(2.0)
    layout = ParamLayout.of(state)
    assert float_keys(state) == ["a.weight", "a.bias"]
    assert layout.numels == [6, 2] and layout.num_params == 8
    flat = layout.flatten(state)
    back = layout.unflatten(flat)
    assert all(torch.equal(back[k], state[k]) for k in layout.keys)
    assert back["a.weight"].data_ptr() == flat.data_ptr()  # a view, not a copy
    assert layout.segment_ids().tolist() == [0] * 6 + [1] * 2


def test_unflatten_passes_gradients():
    layout = ParamLayout.of(tiny_state())
    flat = torch.zeros(layout.num_params, requires_grad=True)
    parts = layout.unflatten(flat)
    (parts["a.weight"].sum() * 2 + parts["a.bias"].sum()).backward()
    assert flat.grad.tolist() == [2.0] * 6 + [1.0] * 2
