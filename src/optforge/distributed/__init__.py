"""Distributed training helpers: checkpoints through ``torch.distributed.checkpoint`` that keep
every optimizer's whole state (:class:`OptimizerState`). Policies per optimizer under DDP, FSDP2
and DCP: ``docs/distributed.md``."""

from optforge.distributed.checkpoint import OptimizerState

__all__ = ["OptimizerState"]
