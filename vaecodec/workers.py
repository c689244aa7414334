"""A batch converted by several worker processes (`--jobs N`).

Processes rather than torch's threads: the entropy coder and the exact prior run on one core, and
torch's threads scale poorly on images of a megapixel or less, so N workers with cores/N threads
each keep every core busy. The workers only read and convert; the command writes every file, in
order. They start with SIGINT ignored, so that Ctrl-C (which the terminal sends to the whole
process group) reaches only the command, which then stops them; SIGTERM stops them at once.

Workers of one thread each (as many jobs as cores) are forked from the command, so they start at
once with torch imported and the weights loaded: spawning each cost as much as a few images
(Kodak, 2 cores: 1.19× one core with spawned workers, 1.72× forked). Workers of several threads
are spawned, since a forked child cannot start a team of OpenMP threads (it hangs), and so are
all workers where CUDA is present, which a forked child cannot use either.
"""

import functools
import gc
import multiprocessing
import os
import signal
from contextlib import contextmanager


def cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def pool(jobs, preload=None):
    """A `map(function, items)` giving `function(item)` for each item, in order, in up to `jobs`
    worker processes started at its first call; they are stopped when the block ends. Forked
    workers start after `preload()` (what they all need: the weights)."""
    started, frozen = [], []

    def map_in_workers(function, items):
        processes = min(jobs, len(items))
        threads = max(1, cores() // processes)
        import torch

        fork = threads == 1 and not torch.cuda.is_available()
        if fork and preload:
            preload()
        if fork:
            # The command's objects (torch's among them) out of the workers' collections: a
            # worker's first full collection would otherwise write to every one of them and so
            # copy their pages, 90 ms of its first image (Kodak with --jobs 2: 4.64–4.73 s →
            # 4.44–4.63 s). They go back into collections when the workers stop.
            gc.freeze()
            frozen.append(True)
        context = multiprocessing.get_context("fork" if fork else "spawn")
        # What the workers inherit: SIGINT ignored, SIGTERM held back until _start has put back
        # its default action (a forked worker would otherwise run the command's handler).
        ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            started.append(context.Pool(processes, initializer=_start, initargs=(threads,)))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            signal.signal(signal.SIGINT, ignored)
        return started[-1].imap(function, items)

    try:
        yield map_in_workers
    finally:
        for workers in started:
            workers.terminate()
            workers.join()
        if frozen:
            gc.unfreeze()


def _start(threads):
    import torch

    from .allocator import keep_freed_memory

    keep_freed_memory()  # inherited by a forked worker already; a spawned one starts afresh
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    torch.set_num_threads(threads)
