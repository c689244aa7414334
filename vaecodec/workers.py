"""A batch converted by several worker processes (`--jobs N`).

Processes rather than torch's threads: the entropy coder and the exact prior run on one core, and
torch's threads scale poorly on images of a megapixel or less, so N workers with cores/N threads
each keep every core busy. The workers only read and convert; the command writes every file, in
order. They start with SIGINT ignored, so that Ctrl-C (which the terminal sends to the whole
process group) reaches only the command, which then stops them; SIGTERM stops them at once.
"""

import functools
import multiprocessing
import os
import signal
from contextlib import contextmanager


def cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def pool(jobs):
    """A `map(function, items)` giving `function(item)` for each item, in order, in up to `jobs`
    worker processes started at its first call; they are stopped when the block ends."""
    started = []

    def map_in_workers(function, items):
        processes = min(jobs, len(items))
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs torch
        ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what the workers inherit
        try:
            started.append(context.Pool(processes, initializer=_start,
                                        initargs=(max(1, cores() // processes),)))
        finally:
            signal.signal(signal.SIGINT, ignored)
        return started[-1].imap(function, items)

    try:
        yield map_in_workers
    finally:
        for workers in started:
            workers.terminate()
            workers.join()


def _start(threads):
    import torch

    torch.set_num_threads(threads)
