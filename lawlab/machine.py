"""What this machine lacks for a valid plan, beyond what the plugins' checks find: a
model too large for a machine with no GPU, and the dtype it would really run in.

``lawlab validate`` lists these under "cannot run on this machine" and exits 0;
``validate --here`` and ``run`` refuse them, as they refuse a hub model offline.
"""

from __future__ import annotations

import os
from typing import Any

from lawlab.spec.issues import HereIssue


def host_memory() -> int | None:
    """This machine's physical memory in bytes, where the OS says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def has_gpu(device: str) -> bool:
    """Whether ``device`` (a spec's execution.device) runs on a GPU here."""
    from lawlab.run.memory import device_capacity

    if device in ("cpu", "mps"):
        return device == "mps"
    return device_capacity(device, None) is not None


def dtype_here(plan: Any) -> str:
    """The dtype models would load in on this machine (execution.dtype, "auto" resolved)."""
    from lawlab.run.memory import compute_dtype

    ex = plan.spec.spec.execution
    return compute_dtype(ex.dtype, has_gpu(ex.device))


def cpu_bytes(params: float, dtype: str) -> int:
    """Memory a CPU-only machine needs for a model: the base model and its pruned copy
    (the study keeps both) in the dtype it computes in. Activations are left out, so
    this is a floor: a model above it cannot run here at all."""
    from lawlab.run.memory import DTYPE_BYTES

    return int(2 * params * DTYPE_BYTES[dtype])


def machine_limits(plan: Any, ram: int | None = None) -> list[HereIssue]:
    """The models this machine (no GPU) cannot hold: their floor exceeds its memory."""
    from lawlab.run.memory import GIB

    ex = plan.spec.spec.execution
    if has_gpu(ex.device) or not plan.memory:
        return []
    ram = host_memory() if ram is None else ram
    if not ram:
        return []
    dtype = dtype_here(plan)
    out = []
    for i, m in enumerate(plan.spec.spec.models):
        est = plan.memory.get(m.name)
        if est is None or (need := cpu_bytes(est.params, dtype)) <= ram:
            continue
        out.append(HereIssue(
            "memory", f"{m.name} ({est.params / 1e9:.1f}B: {need / GIB:.1f} GiB > {ram / GIB:.1f} GiB)", f"models[{i}]",
            f"model {m.name!r} has {est.params / 1e9:.2f}B parameters: in {dtype} with its pruned copy it needs at "
            f"least {need / GIB:.0f} GiB, and this machine has {ram / GIB:.0f} GiB and no GPU",
            "run it on a machine with a GPU that holds it (lawlab plan shows each model's estimated peak)",
        ))
    return out
