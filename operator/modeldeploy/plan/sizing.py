"""GPU sizing: how many GPUs of a given memory one replica needs. Pure arithmetic."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..api import ModelFormat
from ..api.quantity import quantity_value

GIB = 1024**3

# Bytes per parameter of the weights as the engine holds them in GPU memory.
_SERVING_BYTES = {
    "none": 2.0,     # bf16 / fp16
    "8-bit": 1.0,    # bitsandbytes int8
    "4-bit": 0.5,    # bitsandbytes nf4
    "Int8": 1.0,
    "Int4": 0.5,
    "FP8": 1.0,
}


def serving_bytes_per_param(quantization: str) -> float:
    return _SERVING_BYTES.get(quantization, 2.0)


def download_bytes_per_param(fmt: ModelFormat, quantization: str) -> float:
    """What the hub holds: load-time quantization (8-bit, 4-bit) still downloads bf16."""
    if fmt is ModelFormat.PYTORCH:
        return 2.0
    # Pre-quantized weights keep embeddings, norms and scales in 16 bits: about 10% more.
    return serving_bytes_per_param(quantization) * 1.1


def weights_gib(parameters_b: float, bytes_per_param: float) -> float:
    return parameters_b * 1e9 * bytes_per_param / GIB


@dataclass(frozen=True)
class GpuNeed:
    """The memory one replica needs, and the GPUs that gives."""

    weights_gib: float
    required_gib: float
    usable_per_gpu_gib: float
    usable_fraction: float
    minimum_gpus: int


def gpu_need(weights: float, headroom: float, gpu_memory_gib: float,
             usable_fraction: float) -> GpuNeed:
    required = weights * (1 + headroom)
    usable = gpu_memory_gib * usable_fraction
    return GpuNeed(weights, required, usable, usable_fraction,
                   max(1, math.ceil(required / usable - 1e-9)))


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def tensor_parallel_size(minimum: int, attention_heads: int | None, limit: int) -> int | None:
    """The smallest power of two >= minimum that divides the head count, within limit."""
    size = next_power_of_two(minimum)
    while size <= limit:
        if attention_heads is None or attention_heads % size == 0:
            return size
        size *= 2
    return None


def valid_tensor_parallel(size: int, attention_heads: int | None) -> bool:
    power_of_two = size & (size - 1) == 0
    return power_of_two and (attention_heads is None or attention_heads % size == 0)


def cache_size_gib(download_gib: float, margin: float) -> int:
    return max(1, math.ceil(download_gib * (1 + margin) + 1))


# the storage quantities a PVC size takes here: a number and a unit, no exponent, no milli
_STORAGE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def quantity_bytes(quantity: str) -> float | None:
    """Bytes of a storage quantity as Kubernetes writes it (``34Gi``, ``500G``, ``1e3`` is
    not one a PVC size takes here); None when it is not such a quantity."""
    if _STORAGE.match(quantity) is None:
        return None
    value = quantity_value(quantity)
    return None if value is None else float(value)
