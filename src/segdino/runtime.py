"""Where and in what precision the model runs: device choice, bf16 detection, autocast.

Inference defaults to precision "auto": bf16 autocast where the hardware computes bf16
natively (a CUDA GPU of compute capability 8.0 or newer; a CPU with AMX or AVX-512 BF16,
read from /proc/cpuinfo on Linux), float32 elsewhere. Without native support, PyTorch
emulates bf16 and runs it slower than float32 (about 12x on an AVX2-only AMD EPYC).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from segdino.errors import UserError

PRECISIONS = ("fp32", "bf16")
INFERENCE_PRECISIONS = ("auto", *PRECISIONS)  # "auto": resolve_precision decides
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16


def pick_device(name: str | None = None) -> torch.device:
    """The named device, else the best available one: CUDA, then Apple MPS, then CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"--device {name}: expected cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: Apple MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 mixed precision on `device`, or nothing for fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16). Read from
    /proc/cpuinfo, so False where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is faster than float32 on `device`: a CUDA GPU of compute
    capability 8.0 (Ampere) or newer, or a CPU with native bf16; never on MPS."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_has_fast_bf16()


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """"fp32" or "bf16": `precision` itself, or for "auto" bf16 where `fast_bf16(device)`."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    autocast(device, precision)  # checks the name
    return precision


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (Linux, for its malloc tuning); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both glibc's: not musl's, for one)
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse rather than give it back at once.

    PyTorch allocates and frees every intermediate tensor of a forward pass on the CPU. By
    default glibc serves large blocks with fresh mmap pages and trims the heap's free top,
    so every pass faults its memory back in, page by page: a quarter of ViT-S/16's
    inference time on a 2-core AMD EPYC VM. Here blocks under 1 GiB come from the heap, which
    is trimmed only when 1 GiB lies free at its top: the process keeps its peak heap for the
    next pass. Linux with glibc only; elsewhere this does nothing. Called once per process.
    """
    libc = glibc()
    if libc is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)




def batches(loader: DataLoader) -> Iterator:
    """Iterate `loader` so that Ctrl-C gives one line, never a worker's traceback. Ctrl-C
    (SIGINT) reaches every process of the terminal's group, and one that arrives while the
    workers fork can be swallowed by CPython's fork hooks, the main process training on.
    So while the workers start, SIGINT is only noted: forked workers keep that handler,
    which never raises, and the main process raises it once they have started."""
    if threading.current_thread() is not threading.main_thread():
        yield from loader  # only the main thread may set a signal handler
        return
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: noted.append(signum))
    try:
        started = iter(loader)
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt
    yield from started


def quiet_worker(_worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: a worker's connection to the main process breaks only
    when that has gone (Ctrl-C, mid-batch); its threads' tracebacks about it say nothing the
    main process's one line does not."""
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, ConnectionError):
            default(args)

    threading.excepthook = hook
