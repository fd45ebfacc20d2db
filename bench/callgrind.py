"""Instructions counted by valgrind's callgrind, for the benchmarks whose
differences are smaller than a wall clock on a shared machine can resolve.

A script measures a piece of work by running itself again as a child
process under callgrind, once doing the work ``count`` times and once
doing it no times, with a fixed hash seed: the difference divided by
``count`` is the work's cost, start-up and warm-up cancelled. Instruction
counts do not depend on what else the machine is doing; repeated runs of
the same code, inputs and environment give the same count.

They do depend on the process's memory layout: the size of the
environment moves the stack and the heap's first blocks, and with them the
addresses CPython hashes objects by (``id()``), so the order of sets and
dicts of objects, and the work done walking them, changes. Seen here: the
same app's read by key moved by up to 4 % between paddings of the
environment, more than the differences the benchmarks judge. So each
child is counted once per layout of :data:`LAYOUTS` (an environment
variable of that many bytes) and the median is kept.

On x86-64 Linux the child runs its start-up (interpreter, imports, app,
warm-up) uninstrumented, several times faster, and turns instrumentation
on only around the measured work (:func:`counting`), with callgrind's
client requests: a dozen bytes of machine code called through ctypes,
which do nothing outside valgrind. Elsewhere the whole process is counted,
as the difference of the two children cancels the start-up all the same.

Used by ``lazy.py``, ``compat.py``, ``observability.py`` and
``statement_hooks.py``; each decides what its child does and how many
children run at once.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

#: Two children at a time: the machines these run on have two cores.
WORKERS = 2


#: Bytes of padding in the environment, one child per entry: nine memory
#: layouts per measurement (see the module's docstring). Single layouts of
#: one read by key spread over 4 % (1,215,000 to 1,270,000 instructions);
#: the median of five still moved by 1.5 % between runs of nearly the same
#: code, that of nine by less.
LAYOUTS = (0, 61, 137, 307, 733, 1009, 1500, 2503, 4099)
LAYOUT_VARIABLE = "SESSIONSCOPE_BENCH_LAYOUT"

#: callgrind.h: VG_USERREQ_TOOL_BASE('C', 'T') + 4 and + 5.
_START_INSTRUMENTATION = 0x43540004
_STOP_INSTRUMENTATION = 0x43540005
#: valgrind.h's client request for amd64, as a function ``f(args)``:
#: the marker valgrind recognises (four rotations of rdi, 128 bits in all,
#: so rdi is unchanged) and ``xchg rbx, rbx``, with rax pointing at the
#: request's arguments; natively it does nothing and returns 0.
_CLIENT_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi
    "31d2"  # xor edx, edx
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)
#: Whether children can switch instrumentation on and off themselves.
REGIONS = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
_request: Callable[[int], int] | None = None


def _client_request(code: int) -> int:
    global _request
    if _request is None:
        memory = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        memory.write(_CLIENT_REQUEST)
        arguments_type = ctypes.c_ulong * 6
        function = ctypes.CFUNCTYPE(ctypes.c_ulong, arguments_type)(
            ctypes.addressof(ctypes.c_char.from_buffer(memory))
        )

        def request(code: int) -> int:
            return int(function(arguments_type(code, 0, 0, 0, 0, 0)))

        _request = request
        _request.memory = memory  # type: ignore[attr-defined]  # kept mapped
    return _request(code)


@contextmanager
def counting() -> Iterator[None]:
    """In a child, the work to count: instrumentation is on while the block
    runs (the child's start-up is not instrumented). No effect outside
    valgrind, nor where :data:`REGIONS` is False."""
    if REGIONS:
        _client_request(_START_INSTRUMENTATION)
    try:
        yield
    finally:
        if REGIONS:
            _client_request(_STOP_INSTRUMENTATION)


def shift_heap() -> None:
    """In a child, move the heap by this layout's amount too: as many small
    objects of sizes 33 to 512 bytes as the layout has bytes of padding,
    kept alive, so that what the child builds next (the app, its engines
    and sessions) lands elsewhere in every size class of CPython's
    allocator. The environment's padding alone moves the stack and the
    first blocks, and left reads by key of two apps in clusters 2 % apart
    whatever the padding."""
    _ballast.extend(b"x" * (index % 480) for index in range(len(os.environ.get(LAYOUT_VARIABLE, ""))))


_ballast: list[bytes] = []


def available() -> bool:
    """Whether valgrind is installed."""
    return shutil.which("valgrind") is not None


def collected(script: str, arguments: Sequence[str], padding: int = 0) -> int:
    """The instructions callgrind counted for ``python script *arguments``:
    in its :func:`counting` blocks where :data:`REGIONS`, else the whole
    process (start-up, imports and all); ``padding``: bytes of environment
    added (the memory layout)."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *(["--instr-atstart=no"] if REGIONS else []),
            sys.executable,
            script,
            *arguments,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0", LAYOUT_VARIABLE: "x" * padding},
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{os.path.basename(script)} {' '.join(arguments)} failed under callgrind"
            f" (exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    for line in result.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"no instruction count from callgrind for {' '.join(arguments)}:\n{result.stderr}")


def per_unit(script: str, child: Sequence[str], count: int, after: Sequence[str] = ()) -> float:
    """Instructions per unit of work of the child ``python script *child N
    *after``, which does the work N times: counted with N = ``count`` and
    N = 0, the difference divided by ``count``; the median over
    :data:`LAYOUTS`. Where :data:`REGIONS`, N = 0 counts only the switching
    on and off, so it is run once."""

    def run(times: int, padding: int) -> int:
        return collected(script, [*child, str(times), *after], padding)

    zero = run(0, 0) if REGIONS else None
    samples = [
        (run(count, padding) - (zero if zero is not None else run(0, padding))) / count for padding in LAYOUTS
    ]
    return statistics.median(samples)


def per_unit_each(
    script: str,
    children: Mapping[Key, Sequence[str]],
    count: int,
    after: Sequence[str] = (),
    workers: int = WORKERS,
) -> dict[Key, float]:
    """:func:`per_unit` of every child of ``children`` (by key, in the order
    given), ``workers`` children under callgrind at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(per_unit, script, child, count, after) for key, child in children.items()}
        return {key: future.result() for key, future in futures.items()}
