"""Machinery shared by the benchmark scripts: interleaved timing, worker processes, peak memory,
the machine's matrix-multiply rate and markdown tables.

Timings on a shared machine drift by a factor of two within minutes, so every comparison is a
ratio of medians over repetitions that alternate between the variants (A B A B ...), never two
separate runs. Settings that hold for a whole process (glibc malloc options, environment
variables read once by torch, torch.compile) get one worker process per variant; the parent
still alternates the work between them, one unit at a time.
"""

from __future__ import annotations

import ctypes
import datetime
import importlib
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- reporting


def machine_info() -> str:
    """One line: CPU, cores, torch, threads, load average, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load[0]:.1f}, "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A markdown table."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------- measurements


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best float32 matrix-multiply rate of this process, in GFLOP/s (n x n times n x n)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1
               ) -> dict[str, list[float]]:
    """Seconds per call of each function, calls alternating between the functions."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return times


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    """Current resident set size, MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Resident-set high-water mark since the last :func:`reset_peak_rss`, MiB."""
    return _status_kib("VmHWM") / 1024


def release_free_memory() -> None:
    """Hand the heap's free memory back to the kernel (glibc ``malloc_trim``), so that a peak
    measured next counts memory the measured code touches, not memory it reuses."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def extra_peak_rss(out: list):
    """Append to ``out`` the peak resident memory above the level at entry, MiB."""
    release_free_memory()
    reset_peak_rss()
    base = rss_mib()
    yield
    out.append(peak_rss_mib() - base)


# --------------------------------------------------------------------------- workers


@dataclass
class Spec:
    """A worker: ``module.builder(**kwargs)`` returns the callable that does one unit of work.

    ``env`` is set in the worker's environment before torch is imported there; ``threads`` is
    its torch intra-op thread count.
    """

    module: str
    builder: str
    kwargs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    threads: int = 2


def _worker(conn, spec: Spec) -> None:
    os.environ.update(spec.env)
    import torch as _torch

    _torch.set_num_threads(spec.threads)
    t0 = time.perf_counter()
    fn = getattr(importlib.import_module(spec.module), spec.builder)(**spec.kwargs)
    conn.send(("ready", time.perf_counter() - t0))
    while True:
        cmd = conn.recv()
        if cmd == "run":
            conn.send(_timed(fn))
        elif cmd == "reset_peak":
            reset_peak_rss()
            conn.send(rss_mib())
        elif cmd == "peak":
            conn.send(peak_rss_mib())
        else:
            conn.send(None)
            return


class _Local:
    """A worker living in this process (``Workers(..., inprocess=True)``, for smoke tests)."""

    def __init__(self, spec: Spec) -> None:
        t0 = time.perf_counter()
        self.fn = getattr(importlib.import_module(spec.module), spec.builder)(**spec.kwargs)
        self.setup_s = time.perf_counter() - t0

    def send(self, cmd: str) -> None:
        if cmd == "run":
            self.reply = _timed(self.fn)
        elif cmd == "reset_peak":
            reset_peak_rss()
            self.reply = rss_mib()
        elif cmd == "peak":
            self.reply = peak_rss_mib()
        else:
            self.reply = None

    def recv(self):
        return self.reply


class Workers:
    """One spawned process per :class:`Spec`; :meth:`interleave` alternates work between them.

    With ``inprocess=True`` the work runs in this process instead (process-wide settings then
    are shared; for smoke tests).
    """

    def __init__(self, specs: dict[str, Spec], *, inprocess: bool = False) -> None:
        self.conns, self.procs, self.setup_s = {}, {}, {}
        if inprocess:
            for name, spec in specs.items():
                self.conns[name] = _Local(spec)
                self.setup_s[name] = self.conns[name].setup_s
            return
        ctx = mp.get_context("spawn")
        for name, spec in specs.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
            proc.start()
            self.conns[name], self.procs[name] = parent, proc
        for name, conn in self.conns.items():
            msg, seconds = conn.recv()
            self.setup_s[name] = seconds

    def _ask(self, name: str, cmd: str):
        self.conns[name].send(cmd)
        return self.conns[name].recv()

    def interleave(self, reps: int, warmup: int = 1) -> dict[str, list[float]]:
        """Seconds per unit of work, the workers taking turns; peak memory reset after warm-up."""
        self.warmup_s: dict[str, float] = {}
        for _ in range(warmup):
            for name in self.conns:
                self.warmup_s[name] = self._ask(name, "run")
        self.base_mib = {name: self._ask(name, "reset_peak") for name in self.conns}
        times: dict[str, list[float]] = {name: [] for name in self.conns}
        for _ in range(reps):
            for name in self.conns:
                times[name].append(self._ask(name, "run"))
        return times

    def peak_mib(self) -> dict[str, float]:
        """Each worker's resident-set peak during :meth:`interleave` (whole process), MiB."""
        return {name: self._ask(name, "peak") for name in self.conns}

    def close(self) -> None:
        for name, conn in self.conns.items():
            try:
                conn.send("stop")
                conn.recv()
            except (BrokenPipeError, EOFError):
                pass
            if name in self.procs:
                self.procs[name].join(timeout=30)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
