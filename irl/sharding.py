"""Generation from a model whose weights are sharded across processes (DeepSpeed ZeRO-3, FSDP), as TRL's
`unwrap_model_for_generation` and accelerate's FSDP guidance do it. Used by IRLTrainer.sample (online IQLearn,
GAIL); with DDP, ZeRO-1/2 or one process it only unwraps the model.

- ZeRO-3: each process holds 1/N of every parameter; the engine gathers a layer's parameters in a forward hook
  and frees them after. For generation (hundreds of small forward passes) all parameters are gathered once
  (`deepspeed.zero.GatheredParameters`) and the engine's hooks are taken off meanwhile, so each process then
  generates on its own with the full weights and no collective per token.
- FSDP (version 1): the root unit's parameters (embeddings, final norm, head) are gathered only inside the
  wrapper's forward, which generation bypasses, so they are summoned for the whole generation
  (`FullyShardedDataParallel.summon_full_params(model, recurse=False)`); the inner units (decoder layers) still
  gather theirs in their own forward, a collective, so every process must take as many forward steps as the
  others: generation runs `synced_gpus` (a process whose rows are done keeps stepping until all are).
- FSDP2 (`fully_shard`): every unit, the root included, gathers in its forward hooks: synced steps, nothing to
  summon.
"""

from contextlib import contextmanager

from accelerate.utils import DistributedType


def sharding_of(accelerator) -> str | None:
    """How the prepared model's weights are split: "zero3", "fsdp" (version 1), "fsdp2", or None (whole on each
    process: one process, DDP, ZeRO-1/2)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return "zero3" if accelerator.state.deepspeed_plugin.zero_stage == 3 else None
    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp2" if accelerator.is_fsdp2 else "fsdp"
    return None


@contextmanager
def unwrap_for_generation(model, accelerator):
    """Yield (module to call `generate`/forward on, synced) for the prepared `model`: `synced` says that every
    process must take the same number of forward steps (FSDP)."""
    with gathered_for_generation(model, accelerator.unwrap_model(model), sharding_of(accelerator),
                                 accelerator.num_processes) as found:  # fmt: skip
        yield found


@contextmanager
def gathered_for_generation(model, unwrapped, sharding: str | None, num_processes: int):
    """`unwrapped` (the module inside the wrapper `model`) ready to generate under `sharding` (module docstring)."""
    if sharding == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            _zero3_hooks(model, remove=True)
            try:
                yield unwrapped, False
            finally:
                _zero3_hooks(model, remove=False)
    elif sharding == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False):
            yield unwrapped, num_processes > 1
    else:
        yield unwrapped, sharding == "fsdp2" and num_processes > 1


def _zero3_hooks(engine, remove: bool) -> None:
    """Take the ZeRO-3 engine's parameter fetch/release hooks off (`remove`) or put them back. Before the first
    optimizer step the engine has no optimizer and nothing to do."""
    optimizer = getattr(engine, "optimizer", None)
    if optimizer is None:
        return
    offload = getattr(optimizer, "parameter_offload", optimizer)
    if remove:
        for module in offload.module.modules():
            for param in list(module.parameters(recurse=False)) + list(module.ds_external_parameters()):
                param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
    else:
        offload._register_deepspeed_module(offload.module)
