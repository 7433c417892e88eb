"""What produced a result: package versions, device, threads, Python (recorded in every results file)."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

PACKAGES = ("concrete_subspace", "torch", "torchvision", "transformers", "open_clip_torch", "datasets", "peft",
            "safetensors", "numpy", "pandas")


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: str | torch.device = "cpu") -> dict:
    """The device a run used, with the GPU name when it is one."""
    device = torch.device(device)
    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def environment_info(device: str | torch.device = "cpu") -> dict:
    """Versions, device and platform in one JSON-ready dict."""
    return {"versions": package_versions(), "python": platform.python_version(), "platform": platform.platform(),
            **device_info(device)}
