"""Instructions counted by valgrind's callgrind, for the benchmarks whose
differences are smaller than a wall clock on a shared machine can resolve.

A script measures a piece of work by running itself again as a child
process under callgrind, once doing the work ``count`` times and once
doing it no times, with a fixed hash seed: the difference divided by
``count`` is the work's cost, start-up and warm-up cancelled. Instruction
counts do not depend on what else the machine is doing; repeated runs of
the same code agree to within about 0.5 %.

Used by ``lazy.py``, ``compat.py``, ``observability.py`` and
``statement_hooks.py``; each decides what its child does and how many
children run at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

#: Two children at a time: the machines these run on have two cores.
WORKERS = 2


def available() -> bool:
    """Whether valgrind is installed."""
    return shutil.which("valgrind") is not None


def collected(script: str, arguments: Sequence[str]) -> int:
    """The instructions callgrind counted for ``python script *arguments``
    (the whole process: start-up, imports and all)."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            *arguments,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
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
    N = 0, the difference divided by ``count``."""

    def run(times: int) -> int:
        return collected(script, [*child, str(times), *after])

    return (run(count) - run(0)) / count


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
