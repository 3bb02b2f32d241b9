"""The pitfall registry: every device pitfall devcheck can explain and reproduce.

Importing this package never imports torch: each pitfall's reproduction loads torch
inside its own functions, so ``devcheck explain`` and ``devcheck pitfalls list`` stay fast.
The order below is the catalog's order (docs/pitfalls.md), headline case first.
"""

from __future__ import annotations

from devcheck.pitfalls import (
    cpu_only_wheel,
    cublas_error,
    cuda_available_but_unused,
    cuda_init_before_fork,
    cuda_out_of_memory,
    cuda_tensor_to_numpy,
    cuda_unknown_error,
    cudnn_error,
    dataloader_shm_exhausted,
    ddp_load_without_map_location,
    ddp_missing_set_epoch,
    ddp_rank_mismatch,
    default_device_fork_worker,
    default_device_not_applied,
    default_device_sampler_generator,
    device_side_assert,
    dist_rendezvous_timeout,
    driver_too_old,
    gpu_arch_not_in_wheel,
    gpu_checkpoint_on_cpu,
    hidden_host_sync,
    illegal_memory_access,
    invalid_device_ordinal,
    mixed_devices,
    mps_float64,
    mps_op_not_implemented,
    mps_out_of_memory,
    nccl_error,
    no_cpu_fallback,
    no_driver,
    notebook_plot_in_script,
    numpy_on_requires_grad,
    optimizer_before_model_to,
    pin_memory_without_accelerator,
    spawn_needs_importable_main,
    tensor_to_not_inplace,
    torch_load_weights_only,
    unstable_softmax,
)
from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom

__all__ = ["REGISTRY", "Fix", "Pitfall", "Skip", "Symptom", "all_pitfalls", "get"]

_MODULES = (
    default_device_sampler_generator,
    default_device_fork_worker,
    default_device_not_applied,
    mixed_devices,
    tensor_to_not_inplace,
    cuda_tensor_to_numpy,
    numpy_on_requires_grad,
    cpu_only_wheel,
    no_driver,
    driver_too_old,
    gpu_arch_not_in_wheel,
    invalid_device_ordinal,
    gpu_checkpoint_on_cpu,
    cuda_init_before_fork,
    dataloader_shm_exhausted,
    spawn_needs_importable_main,
    pin_memory_without_accelerator,
    hidden_host_sync,
    optimizer_before_model_to,
    device_side_assert,
    cuda_available_but_unused,
    notebook_plot_in_script,
    unstable_softmax,
    torch_load_weights_only,
    no_cpu_fallback,
    ddp_missing_set_epoch,
    ddp_load_without_map_location,
    ddp_rank_mismatch,
    dist_rendezvous_timeout,
    cuda_out_of_memory,
    cudnn_error,
    cublas_error,
    illegal_memory_access,
    cuda_unknown_error,
    nccl_error,
    mps_float64,
    mps_out_of_memory,
    mps_op_not_implemented,
)

REGISTRY: dict[str, Pitfall] = {m.PITFALL.id: m.PITFALL for m in _MODULES}
assert all(m.__name__.rsplit(".", 1)[1] == m.PITFALL.id for m in _MODULES)


def all_pitfalls() -> list[Pitfall]:
    return list(REGISTRY.values())


def get(pitfall_id: str) -> Pitfall:
    """The pitfall with this id; KeyError names the known ids."""
    try:
        return REGISTRY[pitfall_id]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise KeyError(f"no pitfall {pitfall_id!r}; known ids: {known}") from None
