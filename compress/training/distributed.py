"""Data-parallel fine-tuning through Hugging Face accelerate: `compress finetune` runs unchanged under
`accelerate launch --num_processes N` (DDP: gloo on CPU, NCCL on GPUs; FSDP where an accelerate config selects it
on GPUs). Every process trains on its share of each global batch of `batch_size` rows (rows rank, rank + N, ...);
DDP averages the gradients, so a step is the step one process takes on the whole batch. Only the main process
claims and writes the output folder. Not launched (one process), training is the plain PyTorch loop as before.
"""

from __future__ import annotations

import os

from compress.errors import CompressError


def world() -> tuple[int, int]:
    """(rank, processes) as the launcher set them (torchrun / accelerate launch); (0, 1) when not launched."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return world()[0] == 0


class Parallel:
    """The few calls of the training loop that differ between one process and N: prepare, this process's rows,
    backward, gradient clipping, the global mean of the loss."""

    def __init__(self, device: str, batch_size: int):
        rank, self.processes = world()
        if batch_size % self.processes:
            raise CompressError(f"batch_size (--batch-size) {batch_size} does not split over {self.processes} "
                                f"processes: use a multiple of {self.processes}")
        self.acc = None
        if self.processes > 1:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=not device.startswith("cuda"))
        self.device = self.acc.device if self.acc else device
        self.is_main = rank == 0

    def prepare(self, model, optimizer):
        """(model to call, optimizer to step): DDP-wrapped under N processes; `model` is trained in place."""
        return self.acc.prepare(model, optimizer) if self.acc else (model, optimizer)

    def rows(self, batch):
        return batch[self.acc.process_index::self.processes] if self.acc else batch

    def backward(self, loss) -> None:
        self.acc.backward(loss) if self.acc else loss.backward()

    def clip(self, parameters, max_norm: float) -> None:
        import torch

        if self.acc:
            self.acc.clip_grad_norm_(parameters, max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def mean(self, loss):
        """The global batch's mean loss (every process holds an equal share of the rows)."""
        return self.acc.reduce(loss.detach(), "mean") if self.acc else loss.detach()


def local_device(device: str) -> str:
    """Each launched process on its own GPU (LOCAL_RANK); unchanged on CPU or when not launched."""
    if world()[1] > 1 and device == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def share(value):
    """The main process's `value`, on every process (a no-op when not launched). The process group waits up
    to a day, so the others can wait while the main process alone runs a long stage (GPTQ, eval)."""
    if world()[1] == 1:
        return value
    from datetime import timedelta

    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=not _cuda(), timeout=timedelta(days=1))
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait() -> None:
    """Every process waits here until all reach it (a no-op when not launched or before any collective call)."""
    group = _group()
    if group:
        group.barrier()


def close() -> None:
    """At the end of a launched command: wait for the main process to finish writing, then leave the process
    group. A process that exits with the group live can abort the run (gloo: "terminate called without an active
    exception", seen when a recipe's rerun skipped every stage and rank 1 left while rank 0 wrote the report)."""
    group = _group()
    if group:
        group.barrier()
        group.destroy_process_group()


def _group():
    """torch.distributed when launched with its process group initialised, else None."""
    if world()[1] == 1:
        return None
    import torch.distributed as dist

    return dist if dist.is_initialized() else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
