"""Image corruptions for the robustness experiment: pure functions, ``severity`` 1..5, explicit generator.

The seven corruptions of the paper's robustness table (motion blur, impulse noise, Gaussian noise, pixelate,
spatter, contrast, JPEG), with the severity parameters of Hendrycks & Dietterich's ImageNet-C
(arXiv 1903.12261) and our own implementations (no ImageMagick/OpenCV/``imagecorruptions``):

- ``gaussian_noise``  x + N(0, s²), s = .08 .12 .18 .26 .38
- ``impulse_noise``   salt-and-pepper on a fraction a = .03 .06 .09 .17 .27 of the values (per channel, as skimage)
- ``motion_blur``     one-sided line blur with Gaussian tap weights, (radius, sigma) = (10,3) (15,5) (15,8) (15,12)
                      (20,15) at 224 px, scaled with image size; angle ~ U(-45°, 45°)
- ``pixelate``        box-downsample to a factor c = .6 .5 .4 .3 .25 of the side, box-upsample back
- ``spatter``         ImageNet-C's liquid (severity 1-3) and mud (4-5) splashes, simplified: a thresholded,
                      smoothed Gaussian field blends in a water or mud colour (ImageNet-C's water-drop edge
                      shading uses OpenCV and is left out)
- ``contrast``        (x - per-channel mean) * c + mean, c = .4 .3 .2 .1 .05
- ``jpeg_compression`` JPEG round trip at quality 25 18 15 10 7

Every function takes a PIL image or a float tensor in [0, 1] of shape [3, H, W] or [B, 3, H, W] and returns the
same kind (PIL in, PIL out). Random corruptions need ``generator`` (a ``torch.Generator``); the result is a pure
function of (image, severity, generator state). Apply them after the CLIP resize/crop, before normalisation.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..seeding import derive_seed

CORRUPTIONS: tuple[str, ...] = (
    "motion_blur",
    "impulse_noise",
    "gaussian_noise",
    "pixelate",
    "spatter",
    "contrast",
    "jpeg_compression",
)

GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma) in pixels at 224 x 224
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
JPEG_QUALITY = (25, 18, 15, 10, 7)
# (mean, std, blur sigma, threshold, intensity, kind) of the liquid field; kind 0 = water, 1 = mud
SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)
WATER_COLOR = (175 / 255, 238 / 255, 238 / 255)
MUD_COLOR = (63 / 255, 42 / 255, 20 / 255)


# ---------------------------------------------------------------------------------------------- plumbing


def _level(params: tuple, severity: int) -> Any:
    """Parameter of ``severity`` (1..5), with a clear error otherwise."""
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return params[severity - 1]


def _need_generator(generator: torch.Generator | None, name: str) -> torch.Generator:
    """Random corruptions require an explicit generator (no global RNG)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} is random: pass generator=torch.Generator().manual_seed(...)")
    return generator


def _to_batch(image: Any) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """PIL or [3,H,W]/[B,3,H,W] tensor -> ([B,3,H,W] float tensor in [0,1], function restoring the input kind)."""
    if isinstance(image, Tensor):
        if image.dim() == 3:
            return image.unsqueeze(0).float(), lambda t: t[0].to(image.dtype)
        if image.dim() == 4:
            return image.float(), lambda t: t.to(image.dtype)
        raise ValueError(f"image tensor must be [3,H,W] or [B,3,H,W], got shape {tuple(image.shape)}")
    from PIL import Image

    if isinstance(image, Image.Image):
        from torchvision.transforms import functional as TF

        mode = image.mode
        pixels = TF.to_tensor(image.convert("RGB")).unsqueeze(0)
        return pixels, lambda t: TF.to_pil_image(t[0].clamp(0, 1)).convert(mode if mode in ("L", "RGB") else "RGB")
    raise TypeError(f"expected a PIL image or a tensor, got {type(image).__name__}")


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """U(0,1) samples on the CPU from ``generator``."""
    return torch.rand(shape, generator=generator)


def _gaussian_kernel1d(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian kernel, radius 4 sigma (as scipy.ndimage.gaussian_filter's default truncate)."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [B,C,H,W] with reflect padding."""
    k = _gaussian_kernel1d(sigma).to(x)
    c, r = x.shape[1], (len(k) - 1) // 2
    x = F.conv2d(
        F.pad(x, (r, r, 0, 0), mode="reflect" if r < x.shape[-1] else "replicate"),
        k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, r, r), mode="reflect" if r < x.shape[-2] else "replicate"),
        k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
        groups=c,
    )


def _pil_roundtrip(x: Tensor, fn: Callable[[Any], Any]) -> Tensor:
    """Apply a PIL -> PIL function to each image of a [B,3,H,W] batch (uint8 quantised, as a saved image would be)."""
    from torchvision.transforms import functional as TF

    return torch.stack([TF.to_tensor(fn(TF.to_pil_image(img.clamp(0, 1)))) for img in x])


# ---------------------------------------------------------------------------------------------- corruptions


def gaussian_noise(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Additive Gaussian noise (std by severity), clipped to [0, 1]."""
    std = _level(GAUSSIAN_NOISE_STD, severity)
    gen = _need_generator(generator, "gaussian_noise")
    x, restore = _to_batch(image)
    noise = torch.randn(x.shape, generator=gen).to(x)
    return restore((x + std * noise).clamp(0, 1))


def impulse_noise(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Salt-and-pepper noise: a fraction (by severity) of values set to 0 or 1 with equal probability."""
    amount = _level(IMPULSE_AMOUNT, severity)
    gen = _need_generator(generator, "impulse_noise")
    x, restore = _to_batch(image)
    hit = _uniform(tuple(x.shape), gen).to(x.device) < amount
    salt = _uniform(tuple(x.shape), gen).to(x.device) < 0.5
    out = torch.where(hit, salt.to(x.dtype), x)
    return restore(out)


def contrast(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Contrast reduction towards each image's per-channel mean (deterministic; ``generator`` is ignored)."""
    c = _level(CONTRAST_FACTOR, severity)
    x, restore = _to_batch(image)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return restore(((x - mean) * c + mean).clamp(0, 1))


def pixelate(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Box-downsample by a factor (by severity) and box-upsample back to the input size (deterministic)."""
    from PIL import Image

    c = _level(PIXELATE_FACTOR, severity)
    x, restore = _to_batch(image)
    h, w = x.shape[-2:]

    def fn(img):
        small = img.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
        return small.resize((w, h), Image.BOX)

    return restore(_pil_roundtrip(x, fn))


def jpeg_compression(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """JPEG encode/decode round trip at a quality by severity (deterministic)."""
    from PIL import Image

    quality = _level(JPEG_QUALITY, severity)
    x, restore = _to_batch(image)

    def fn(img):
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")

    return restore(_pil_roundtrip(x, fn))


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> Tensor:
    """2-D one-sided motion-blur kernel: Gaussian-weighted taps 0..radius along ``angle_deg``, bilinearly splatted."""
    size = 2 * radius + 1
    kernel = torch.zeros(size, size)
    theta = math.radians(angle_deg)
    for step in range(radius + 1):
        weight = math.exp(-0.5 * (step / sigma) ** 2)
        cx, cy = radius + step * math.cos(theta), radius - step * math.sin(theta)
        x0, y0 = math.floor(cx), math.floor(cy)
        fx, fy = cx - x0, cy - y0
        for dx, dy, wxy in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                kernel[y0 + dy, x0 + dx] += weight * wxy
    return kernel / kernel.sum()


def motion_blur(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Motion blur with a random direction in [-45°, 45°] (one per image), radius/sigma scaled to the image size."""
    radius, sigma = _level(MOTION_BLUR, severity)
    gen = _need_generator(generator, "motion_blur")
    x, restore = _to_batch(image)
    scale = min(x.shape[-2:]) / 224
    radius, sigma = max(1, round(radius * scale)), max(0.5, sigma * scale)
    out = []
    for img in x:
        angle = float(_uniform((1,), gen)) * 90 - 45
        k = motion_kernel(radius, sigma, angle).to(img)
        pad = radius
        padded = F.pad(img.unsqueeze(0), (pad, pad, pad, pad), mode="replicate")
        # conv2d is correlation: flip the kernel so pixels are smeared along the motion direction
        out.append(F.conv2d(padded, k.flip(0, 1).view(1, 1, *k.shape).expand(3, 1, -1, -1), groups=3)[0])
    return restore(torch.stack(out).clamp(0, 1))


def spatter(image: Any, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Liquid (severity 1-3) or mud (4-5) splashes: a thresholded, smoothed random field blends in a colour."""
    mean, std, sigma, threshold, intensity, kind = _level(SPATTER, severity)
    gen = _need_generator(generator, "spatter")
    x, restore = _to_batch(image)
    b, _, h, w = x.shape
    field = mean + std * torch.randn((b, 1, h, w), generator=gen)
    field = gaussian_blur(field, sigma)
    field = torch.where(field < threshold, torch.zeros_like(field), field)
    if kind == 0:  # water: the thresholded field, smoothed and peak-normalised, adds a bright cyan tint
        mask = gaussian_blur(field, 1.0)
        mask = mask / mask.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8) * intensity
        out = x + (mask * torch.tensor(WATER_COLOR).view(1, 3, 1, 1)).to(x)
    else:  # mud: opaque dark-brown blotches where the smoothed indicator of the field stays >= 0.8
        mask = gaussian_blur((field > threshold).float(), intensity)
        mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).to(x)
        out = x * (1 - mask) + mask * torch.tensor(MUD_COLOR).view(1, 3, 1, 1).to(x)
    return restore(out.clamp(0, 1))


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "motion_blur": motion_blur,
    "impulse_noise": impulse_noise,
    "gaussian_noise": gaussian_noise,
    "pixelate": pixelate,
    "spatter": spatter,
    "contrast": contrast,
    "jpeg_compression": jpeg_compression,
}
_ALIASES = {
    "jpeg": "jpeg_compression",
    "gaussian": "gaussian_noise",
    "impulse": "impulse_noise",
    "motion": "motion_blur",
}


def corrupt(image: Any, name: str, severity: int = 1, *, generator: torch.Generator | None = None) -> Any:
    """Apply corruption ``name`` (one of :data:`CORRUPTIONS`, or 'jpeg'/'clean') at ``severity``."""
    if name == "clean":
        return image
    fn = _FUNCTIONS.get(_ALIASES.get(name, name))
    if fn is None:
        raise KeyError(f"unknown corruption {name!r}; known: {list(CORRUPTIONS)} (or 'clean')")
    return fn(image, severity, generator=generator)


def corruption_transform(name: str, severity: int = 1, seed: int = 0) -> Callable[[Tensor], Tensor]:
    """[3,H,W] -> corrupted [3,H,W]; the noise of each image is seeded from (seed, CRC-32 of its pixels).

    So a test set gets the same corruption whatever order (or how often) its images are read; for datasets with
    stable indices, :func:`corrupt_indexed` seeds from the index instead.
    """

    def transform(pixels: Tensor) -> Tensor:
        digest = zlib.crc32(pixels.detach().cpu().contiguous().numpy().tobytes())
        gen = torch.Generator().manual_seed(derive_seed(seed, digest))
        return corrupt(pixels, name, severity, generator=gen)

    return transform


def corrupt_indexed(image: Any, index: int, name: str, severity: int = 1, seed: int = 0) -> Any:
    """Corrupt example ``index`` of a test set deterministically: generator seeded from (seed, index)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, index))
    return corrupt(image, name, severity, generator=gen)
