"""Whether this CPU trains faster in bf16 than in fp32.

On CPUs with AMX tiles (Intel Sapphire Rapids and later) oneDNN runs bf16 matrix products on
them: all-MiniLM-L6 at 128 tokens, batch 16, trained 1.6-2.1x faster under bf16 autocast on the
2-core build machine, and scored 2.8x faster. Without AMX, bf16 runs on AVX-512 BF16 dot
products or is emulated; the project's earlier notes found CPU half precision several times
slower there (not re-measured: no such machine here), so fp32 stays.
`RERANKER_STUDIO_CPU_BF16=0|1` overrides the detection (e.g. to compare both on one machine).
"""

from __future__ import annotations

import os

ENV = "RERANKER_STUDIO_CPU_BF16"


def cpu_has_amx() -> bool:
    import torch

    check = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    if check is not None:
        try:
            return bool(check())
        except Exception:  # noqa: BLE001 - a private torch API: read the flags instead
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and " amx_bf16" in line for line in fh)
    except OSError:
        return False


def cpu_bf16_is_fast() -> bool:
    """True where bf16 training on this CPU is worth it (AMX), or the environment says so."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return cpu_has_amx()


def cpu_precision(requested: str) -> str:
    """The precision a CPU run trains in: bf16 for `auto` or `bf16` where it is fast, else fp32
    (fp16 autocast on CPU has no fast kernels on these machines)."""
    return "bf16" if requested in ("auto", "bf16") and cpu_bf16_is_fast() else "fp32"


def cpu_fallback_note(requested: str) -> str | None:
    """Why a CPU run does not train in the precision asked for; None when it does (or `auto`)."""
    if requested not in ("fp16", "bf16") or cpu_precision(requested) == requested:
        return None
    why = ("no AMX on this CPU (or RERANKER_STUDIO_CPU_BF16=0), where bf16 is expected to be "
           "slower" if requested == "bf16" else "fp16 has no fast CPU kernels; auto or bf16 "
           "trains in bf16 on CPUs with AMX")
    return f"precision {requested} is ignored on CPU: fp32 is used ({why})"
