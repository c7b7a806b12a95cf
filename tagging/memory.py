"""The address space a tagging process reserves, bounded: what a batch host's `ulimit -v`
(or `prlimit --as`) must allow.

Resident memory is small (a few hundred MB), but native libraries reserve address space
generously: glibc's malloc gives each thread that allocates its own arena of up to 64 MB
(the Rust runtimes of deltalake and obstore start a worker thread per core, and Arrow,
LiteRT and OpenCV start more), and Arrow's default allocator (mimalloc) reserves large
regions of its own. Measured on `tagging tag` (benchmarks/README.md, "Memory budget"): 3.2 GB
of address space, so under a 3 GB limit a thread or an allocation failed and the process
aborted. With at most two malloc arenas and Arrow on the system allocator: 1.3 GB.
`bound_address_space` sets both, for this process and the processes it starts; importing
`tagging` calls it, before pyarrow allocates anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2
# The least address space `tagging tag` and a DAG task need (the measured peak, 1.3 GB, with
# room for a larger partition's buffers and the decoding workers' own limits).
MIN_ADDRESS_SPACE = 2 * 1024**3


def bound_address_space() -> None:
    """At most MALLOC_ARENAS malloc arenas, and Arrow on the system allocator (an explicit
    ARROW_DEFAULT_MEMORY_POOL or MALLOC_ARENA_MAX in the environment wins)."""
    os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to bound
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
    if "pyarrow" in sys.modules and os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system":
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def address_space_problem() -> str | None:
    """Why this process's address-space limit is too small to tag (None: it is enough)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft >= MIN_ADDRESS_SPACE:
        return None
    return (f"the address-space limit (ulimit -v, prlimit --as) is {soft / 1024**3:.2f} GB; "
            f"tagging needs at least {MIN_ADDRESS_SPACE / 1024**3:.0f} GB: raise it or "
            "remove it")
