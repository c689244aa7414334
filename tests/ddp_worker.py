"""A training run with deterministic examples, for tests/test_train.py's torchrun test.

    python tests/ddp_worker.py DATA OUT_DIR BATCH STEPS   (torchrun runs it once per rank)

The global batch of every step is the same whatever the number of ranks: two halves, drawn from
(step, half); a single process takes both, rank r of two takes half r. The rate noise is fixed
at 0 (the rates use the middle of each bin). Each rank saves its raw weights to OUT_DIR."""

import os
import sys
from pathlib import Path

import torch

from vaecodec import train as training


def deterministic_batch(self, size, crop, levels):
    step = self.steps_drawn = getattr(self, "steps_drawn", -1) + 1
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    halves = [int(os.environ.get("RANK", "0"))] if ranks == 2 else [0, 1]
    xs, ls = [], []
    for half in halves:
        generator = torch.Generator().manual_seed(1000 * step + half)
        xs.append(torch.rand(size // len(halves), 3, crop, crop, generator=generator))
        ls.append(torch.randint(levels, (size // len(halves),), generator=generator))
    return torch.cat(xs), torch.cat(ls)


if __name__ == "__main__":
    data, out, batch, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    training.Crops.batch = deterministic_batch
    torch.rand_like = lambda x, **kwargs: torch.full_like(x, 0.5)
    model = training.train(data, out / "run.ckpt", steps, batch_size=batch, crop=64, n=8, m=12,
                           lr=0.5, precision="fp32", compile="off", log=lambda line: None)
    torch.save(model.state_dict(), out / f"rank{os.environ.get('RANK', '0')}.pt")
