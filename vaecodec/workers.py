"""A batch converted by several worker processes (`--jobs N`).

Processes rather than torch's threads: the entropy coder and the exact prior run on one core, and
torch's threads scale poorly on images of a megapixel or less, so N workers with cores/N threads
each keep every core busy. The workers only read and convert; the command writes every file, in
order. They ignore SIGINT, so that Ctrl-C (which the terminal sends to the whole process group)
reaches only the command, which then stops them; SIGTERM stops them at once.

A worker can die (the kernel's OOM killer: each holds about 0.5 GB): the files being converted
when it died, its own and those of the workers stopped with it, fail, and the rest of the batch
goes to new workers. So that those are the only files lost, no more files are handed out than
there are workers.

Workers of one thread each (as many jobs as cores) are forked from the command, so they start at
once with torch imported and the weights loaded: spawning each cost as much as a few images
(Kodak, 2 cores: 1.19× one core with spawned workers, 1.72× forked). Workers of several threads
are spawned, since a forked child cannot start a team of OpenMP threads (it hangs), and so are
all workers where CUDA is present, which a forked child cannot use either.
"""

import collections
import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from .interrupts import shielded


def cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def pool(jobs, preload=None):
    """A `map(function, items, lost)` giving `function(item)` for each item, in order, from up to
    `jobs` worker processes started when its first result is asked for, or `lost(item)` for an
    item whose worker died; they are stopped when the block ends. Forked workers start after
    `preload()` (what they all need: the weights)."""
    executors = []

    def map_in_workers(function, items, lost):
        processes = min(jobs, len(items))
        threads = max(1, cores() // processes)
        from .files import codec

        fork = threads == 1 and not codec().torch.cuda.is_available()
        if fork and preload:
            preload()
        context = multiprocessing.get_context("fork" if fork else "spawn")

        def start(count):
            executor = ProcessPoolExecutor(count, context, initializer=_start,
                                           initargs=(threads,))
            executors.append(executor)
            # Every worker at once. Spawned ones would otherwise start one per file handed out,
            # and the executor watches only the workers it knew of when it began to wait: one
            # that died before the next result went unnoticed until then, and the file handed
            # out meanwhile was lost with it (forked ones start at once anyway). The executor's
            # own private method for forked workers: 3.11 on and later 3.10 releases have it.
            launch = getattr(executor, "_launch_processes", None)
            if launch:
                with _signals_held():
                    launch()
            return executor

        return _in_order(function, items, lost, start, processes)

    try:
        yield map_in_workers
    finally:
        for executor in executors:
            _stop(executor)


def _in_order(function, items, lost, start, at_once):
    """`function(item)` for each item, in order, from the workers of `start(count)`, `at_once`
    items being converted at a time. When a worker dies, each of those items gives `lost(item)`
    and the rest go to the workers of a new `start`, no more of them than there are items left."""
    waiting, handed_out = collections.deque(items), collections.deque()
    executor = start(min(at_once, len(waiting)))
    while waiting or handed_out:
        while waiting and sum(not future.done() for _, future in handed_out) < at_once:
            try:
                handed_out.append((waiting[0], _submit(executor, function, waiting[0])))
                waiting.popleft()
            except BrokenProcessPool:  # a worker died: new ones for the files not handed out
                _stop(executor)
                at_once = min(at_once, len(waiting))
                executor = start(at_once)
        item, future = handed_out[0]
        if not future.done():
            wait([future for _, future in handed_out if not future.done()],
                 return_when=FIRST_COMPLETED)
            continue
        handed_out.popleft()
        yield lost(item) if isinstance(future.exception(), BrokenProcessPool) else future.result()


def _submit(executor, function, item):
    """`executor.submit(function, item)`, which may start a worker (see _signals_held)."""
    with _signals_held():
        return executor.submit(function, item)


@contextmanager
def _signals_held():
    """Workers started inside start with SIGINT and SIGTERM blocked, so that none reaches one
    before _start has set what they do there. Here they take effect once the workers are
    started and known, so that _stop stops them."""
    with shielded():
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _stop(executor):
    """Stop the workers at once (shutdown() alone would let them finish their files) and wait
    for them. SIGKILL, since a worker still starting holds SIGTERM back (_signals_held): it
    would go on starting after the command had gone, and fail on its queues with a traceback."""
    processes = list((executor._processes or {}).values())  # Python 3.14: kill_workers()
    for process in processes:
        process.kill()
    executor.shutdown(cancel_futures=True)
    for process in processes:
        process.join()


def _start(threads):
    """A worker's start: Ctrl-C is the command's to handle (it stops the workers), SIGTERM ends
    the worker at once; both were blocked until these are set (_submit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    from .allocator import keep_freed_memory
    from .files import codec

    keep_freed_memory()  # inherited by a forked worker already; a spawned one starts afresh
    codec().torch.set_num_threads(threads)  # a spawned worker imports torch as the command does
