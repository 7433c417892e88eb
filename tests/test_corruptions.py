"""Corruption functions: types and shapes kept, severity ordering, determinism under a generator, clear errors."""

from __future__ import annotations

import pytest
import torch

from concrete_subspace.data import corruptions as C

RANDOM = ("motion_blur", "impulse_noise", "gaussian_noise", "spatter")


def image(seed: int = 0, size: int = 48) -> torch.Tensor:
    """A smooth colourful test image in [0, 1] (gradients + a square), [3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2])
    img[:, size // 4 : size // 2, size // 4 : size // 2] = torch.rand(3, 1, 1, generator=g)
    return img


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", C.CORRUPTIONS)
@pytest.mark.parametrize("severity", [1, 5])
def test_shapes_range_and_change(name, severity):
    x = image()
    y = C.corrupt(x, name, severity, generator=gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(x, y, atol=1e-3), f"{name} at severity {severity} left the image unchanged"


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_batches_and_pil(name):
    from PIL import Image
    from torchvision.transforms import functional as TF

    batch = torch.stack([image(0), image(1)])
    assert C.corrupt(batch, name, 3, generator=gen()).shape == batch.shape
    pil = TF.to_pil_image(image())
    out = C.corrupt(pil, name, 3, generator=gen())
    assert isinstance(out, Image.Image) and out.size == pil.size and out.mode == "RGB"


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_are_deterministic_in_the_generator(name):
    x = image()
    a = C.corrupt(x, name, 3, generator=gen(7))
    b = C.corrupt(x, name, 3, generator=gen(7))
    c = C.corrupt(x, name, 3, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_need_a_generator(name):
    with pytest.raises(TypeError, match="generator"):
        C.corrupt(image(), name, 1)


@pytest.mark.parametrize(
    "name", ["gaussian_noise", "impulse_noise", "contrast", "pixelate", "jpeg_compression", "motion_blur"]
)
def test_higher_severity_distorts_more(name):
    x = image(size=64)
    errors = [float((C.corrupt(x, name, s, generator=gen(3)) - x).abs().mean()) for s in (1, 3, 5)]
    assert errors[0] < errors[1] < errors[2], errors


def test_contrast_formula_and_mean_preserved():
    x = image()
    y = C.contrast(x, 2)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(y, (x - mean) * 0.3 + mean, atol=1e-6)


def test_impulse_noise_fraction():
    x = torch.full((3, 100, 100), 0.5)
    y = C.impulse_noise(x, 4, generator=gen())
    changed = (y != 0.5).float().mean().item()
    assert abs(changed - 0.17) < 0.02 and set(y[y != 0.5].unique().tolist()) <= {0.0, 1.0}


def test_motion_kernel_is_normalised_and_directional():
    k = C.motion_kernel(5, 3.0, 0.0)
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    assert k[5, :5].sum() == 0 and k[5, 5:].sum() > 0.99  # one-sided, along +x for angle 0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(image(), "contrast", 0)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(image(), "contrast", 6)
    with pytest.raises(KeyError, match="unknown corruption"):
        C.corrupt(image(), "fog", 1)
    with pytest.raises(ValueError, match="shape"):
        C.contrast(torch.zeros(10, 10), 1)
    assert C.corrupt(image(), "clean", 1) is not None


def test_indexed_corruption_is_order_independent():
    x = image()
    a = C.corrupt_indexed(x, 5, "gaussian_noise", 2, seed=1)
    b = C.corrupt_indexed(x, 5, "gaussian_noise", 2, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, C.corrupt_indexed(x, 6, "gaussian_noise", 2, seed=1))


def test_transform_noise_depends_on_the_image_not_on_read_order():
    """The dataset transform used by the paper robustness path: same image -> same noise, in any order."""
    first, second = image(), image() * 0.5
    t_forward = C.corruption_transform("gaussian_noise", 3, seed=2)
    t_backward = C.corruption_transform("gaussian_noise", 3, seed=2)
    a1, a2 = t_forward(first), t_forward(second)
    b2, b1 = t_backward(second), t_backward(first)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert torch.equal(t_forward(first), a1)  # reading an image again gives the same corruption
    assert not torch.equal(a1, C.corruption_transform("gaussian_noise", 3, seed=3)(first))
