"""Where to compute and in which precision."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch

from .errors import CnnlabError, ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is {name!r} but no CUDA device is available; use --device cpu")
    return torch.device(name)


def select_cuda_device(name: str | None) -> None:
    """Make GPU N this process's current CUDA device where `name` is cuda:N: its context, default stream and
    cuDNN handle then live on GPU N, not on GPU 0 (where a process on cuda:N would otherwise also make
    them). For a process that works on that one GPU (a sweep worker); anything else changes nothing."""
    if name and name.startswith("cuda:") and torch.cuda.is_available():
        torch.cuda.set_device(torch.device(name))


CPUINFO = "/proc/cpuinfo"
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 `flags`; `bf16` in an Arm CPU's `Features`
# "1": `auto` takes bf16 on this CPU as on one with native bf16, "0": as on one without (the answer bf16
# gives is the same either way, emulated only slower): so that the tests can be run as on the other kind
# of CPU (.ci/run does both).
CPU_BF16_ENV = "CNNLAB_CPU_BF16"


def cpu_has_bf16() -> bool:
    """True where the CPU has bf16 arithmetic units (x86 AVX-512-BF16 or AMX, Arm's BF16 extension); without
    them oneDNN emulates bf16, slower than fp32 (see benchmarks/precision.py). Read from the CPU's flags in
    /proc/cpuinfo (Linux); unknown elsewhere, so False. (oneDNN's own check answers True for any AVX-512 CPU.)
    CNNLAB_CPU_BF16=1 or 0 overrides what the flags say."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open(CPUINFO, encoding="ascii", errors="ignore") as fh:
            lines = [line for line in fh if line.startswith(("flags", "Features"))]
    except OSError:
        return False
    return any(_BF16_FLAGS & set(line.partition(":")[2].split()) for line in lines[:1])


def cuda_has_bf16(device: torch.device) -> bool:
    """True where the GPU has bf16 units (compute capability 8.0 on; ROCm GPUs). torch.cuda.is_bf16_supported
    also says True where bf16 is only emulated (V100, T4) unless told not to."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch whose is_bf16_supported has no such parameter
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def use_bf16(precision: str, device: torch.device) -> bool:
    """`precision` fp32 or bf16 as asked; auto: bf16 only where the hardware computes it natively."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return cuda_has_bf16(device)
    return cpu_has_bf16()


def use_tf32(precision: str) -> bool:
    """Whether a GPU's fp32 convolutions and matmuls may run on TF32 (fp32 range, a 10-bit mantissa in the
    products): under `auto` and `bf16`, which leave speed to cnnlab (autocast's bf16 ops are unaffected; TF32
    speeds what stays in fp32, and a GPU without bf16); not under `fp32`, which asks for fp32 exactly."""
    return precision != "fp32"


def set_tf32(allowed: bool) -> None:
    """TF32 on or off for CUDA's fp32 matmuls and cuDNN's fp32 convolutions (process-wide: see tf32_for), by
    the allow_tf32 flags, which torch's own code still reads (inductor, dynamo): set by `fp32_precision`
    alone (torch >= 2.9), those reads would raise, as torch refuses a mix of the two."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed


def tf32_state() -> dict[str, bool] | None:
    """Whether CUDA's fp32 matmuls and cuDNN's fp32 convolutions may use TF32 now; None where torch refuses to
    read the flags (a process that set TF32 by `fp32_precision` alone)."""
    try:
        return {"matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}
    except RuntimeError:
        return None


@contextlib.contextmanager
def tf32_for(precision: str, device: torch.device) -> Iterator[None]:
    """While inside, on a GPU, TF32 as `precision` asks (use_tf32); torch's flags are process-wide, so they
    are put back after: a training sets them for itself (its environment records them: tf32_state) and
    leaves its caller's as they were. On a CPU nothing changes."""
    if device.type != "cuda":
        yield
        return
    before, b = tf32_state(), torch.backends
    precisions = None if before else (b.cuda.matmul.fp32_precision, b.cudnn.fp32_precision)  # the caller's way
    set_tf32(use_tf32(precision))
    try:
        yield
    finally:
        if before:
            b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = before["matmul"], before["conv"]
        else:
            b.cuda.matmul.fp32_precision, b.cudnn.fp32_precision = precisions


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


MALLOC_ENV = "CNNLAB_MALLOC_TUNING"  # 0 turns tune_host_allocator off


def runs_on_glibc() -> bool:
    """Whether this process runs on glibc on Linux: the C library loaded (os.confstr), not a scan of the
    Python executable (platform.libc_ver)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not a glibc system
        return False


def tune_host_allocator() -> bool:
    """Keep freed memory in the process for the next allocation (glibc malloc on Linux); True if set.

    By default glibc maps every large block afresh and returns it to the kernel when it is freed, so each
    training step's activations are faulted in and zeroed by the kernel page by page. With mmap and trim
    thresholds above any one step's blocks, freed blocks are reused instead: the same numbers, fewer page
    faults, a larger resident size (see docs/benchmarks.md; `benchmarks/host_allocator.py` measures both).
    PyTorch's CPU tuning guide gets the same from jemalloc/tcmalloc; this needs no library. Lasts the
    process's life; CNNLAB_MALLOC_TUNING=0 leaves malloc as it is."""
    if os.environ.get(MALLOC_ENV, "1") == "0" or not runs_on_glibc():
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def tune_for_training(device: str = "auto") -> None:
    """Process-wide settings that make training faster, for a program whose job is to train: on a CPU, malloc
    keeps freed memory for the next step (tune_host_allocator); on a GPU, cuDNN times its convolution
    algorithms once for each input shape (cudnn.benchmark). The command line calls it; `prepare` and `train`
    do not, so a library caller's process keeps its settings unless it calls this itself. A device that cannot
    be had changes nothing here: the run itself then says so, in its one line."""
    try:
        kind = resolve_device(device).type
    except CnnlabError:
        return
    if kind == "cpu":
        tune_host_allocator()
    elif kind == "cuda":
        torch.backends.cudnn.benchmark = True


def available_memory() -> int:
    """Bytes of memory a new allocation can take now without swapping or the OOM killer: MemAvailable,
    which counts reclaimable page cache (Linux); elsewhere the free physical pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no limit


def peak_memory() -> int:
    """Peak resident memory of this process so far, bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak_device_memory(device: torch.device) -> None:
    """Start counting `device`'s peak memory afresh (a process may train several runs: a sweep worker)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_memory(device: torch.device) -> int | None:
    """Peak memory that tensors held on `device` (a GPU) since the last reset, bytes; None for the CPU (its
    memory is the process's resident memory: peak_memory)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device)
