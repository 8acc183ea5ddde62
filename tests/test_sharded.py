"""Sampling from sharded weights, on CPU, two gloo processes each:

- FSDP: PyTorch's wrapper (version 1, one unit per decoder layer, FULL_SHARD) over a tiny Llama, so each process
  holds half of every flattened parameter; generation inside `gathered_for_generation(..., "fsdp", 2)` (what
  IRLTrainer.sample does under FSDP) equals generation from the unsharded model on each process, though the two
  processes need different numbers of steps (synced steps). And the discriminator's gradients, averaged outside
  any engine, leave both processes with the same ones.
- DeepSpeed ZeRO-3: DeepSpeed's own engine (`deepspeed.initialize`, stage 3, CPU accelerator over gloo) over
  the same model, so each process holds half of every parameter; generation inside
  `gathered_for_generation(..., "zero3", 2)` equals unsharded generation with no synced steps, and afterwards the
  engine (its fetch/release hooks put back) gives the unsharded logits bit for bit and takes a training step equal
  to the unsharded one on the two processes' batches.

What does not run here: accelerate drives neither engine without an accelerator. `accelerate launch --use_fsdp`
on CPU stops with "There are currently no available devices found"; under `accelerate launch --use_deepspeed`
on CPU, DeepSpeed's process group spans both processes but accelerate's state has no backend and reports one
process on each (its first gather fails). The FSDP and ZeRO-3 paths through `accelerate launch` run on a GPU
machine (README, Online IQLearn and GAIL)."""

import copy
import os
import socket

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from irl.gail import average_gradients
from irl.generation import Decoding, decode
from irl.sharding import gathered_for_generation

EOS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROMPTS = torch.tensor([[5, 6, 7], [8, 9, 10]])  # one per process


def _on_two_processes(worker) -> dict:
    """Run worker(rank, port, results) in two spawned processes; results[rank] is what each put there."""
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(worker, args=(_free_port(), results), nprocs=2)
    return results


def _model_and_prompt(rank):
    """The tiny Llama both processes start from (seed 0), this process's prompt batch, the generation settings
    (a different length on each process, so they need different step counts) and the unsharded model's greedy
    completion: (model, batch, kwargs, expected)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, eos_token_id=EOS, bos_token_id=None, pad_token_id=0)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    ids = PROMPTS[rank : rank + 1]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kwargs = dict(max_new_tokens=6 + 4 * rank, seed=0, eos_token_id=EOS, pad_token_id=0)
    return model, batch, kwargs, decode(model, batch, Decoding("greedy"), 1, **kwargs).completion_ids


def _worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, batch, kwargs, expected = _model_and_prompt(rank)
        whole = sum(p.numel() for p in model.parameters())
        sharded = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}),
                                           device_id=torch.device("cpu"), use_orig_params=True)  # fmt: skip
        local = sum(p.numel() for p in sharded.parameters())
        with gathered_for_generation(sharded, sharded.module, "fsdp", 2) as (unwrapped, synced):
            got = decode(unwrapped, batch, Decoding("greedy"), 1, synced_gpus=synced, **kwargs).completion_ids
        # the discriminator's gradients: different on each process, their mean on both after averaging
        head = torch.nn.Linear(2, 1)
        head.weight.grad = torch.full((1, 2), float(rank))
        head.bias.grad = torch.tensor([2.0 * rank])
        average_gradients(head)
        results[rank] = dict(whole=whole, local=local, expected=expected, got=got, synced=synced,
                             grads=(head.weight.grad.tolist(), head.bias.grad.tolist()))  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_fsdp_generation_gathers_the_shards_and_steps_in_sync():
    results = _on_two_processes(_worker)
    for rank in (0, 1):
        r = results[rank]
        assert r["local"] < r["whole"]  # each process holds a shard only
        assert r["synced"] and r["got"] == r["expected"], rank
        assert r["grads"] == ([[0.5, 0.5]], [1.0])
    assert len(results[0]["got"][0]) != len(results[1]["got"][0])  # the two processes took different step counts


def _zero3_worker(rank, port, results):
    import deepspeed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")  # fmt: skip
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    try:
        model, batch, kwargs, expected = _model_and_prompt(rank)
        reference = copy.deepcopy(model)
        whole = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            logits = model(**batch).logits
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            config={"train_micro_batch_size_per_gpu": 1, "gradient_clipping": 1.0,
                    "zero_allow_untested_optimizer": True,
                    # no parameter stays gathered after use (by default those under 1e5 entries do: all of these)
                    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}})  # fmt: skip
        local = sum(p.ds_tensor.numel() for p in engine.module.parameters())
        released = all(p.numel() == 0 for p in engine.module.parameters())
        with gathered_for_generation(engine, engine.module, "zero3", 2) as (unwrapped, synced):
            got = decode(unwrapped, batch, Decoding("greedy"), 1, synced_gpus=synced, **kwargs).completion_ids
        with torch.no_grad():
            same_logits = torch.equal(engine(**batch).logits, logits)
        # the engine's hooks are back: its forward gathered each layer's parameters and released them after (a
        # parameter read without the hooks is gathered on access and stays so)
        released_after = all(p.numel() == 0 for p in engine.module.parameters())
        # one step of the engine (gradients averaged over the two processes, norm clipped to 1) against one
        # unsharded step on the mean of the two batches' losses
        engine.backward(engine(**batch, labels=batch["input_ids"]).loss)
        engine.step()
        loss = sum(reference(input_ids=p[None], labels=p[None]).loss for p in PROMPTS) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        torch.optim.SGD(reference.parameters(), lr=0.5).step()
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            stepped = max((a - b).abs().max().item() for a, b in zip(engine.module.parameters(),
                                                                     reference.parameters()))  # fmt: skip
        results[rank] = dict(whole=whole, local=local, released=released and released_after, expected=expected,
                             got=got, synced=synced, same_logits=same_logits, stepped=stepped)  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_zero3_generation_gathers_the_partitions_and_gives_the_engine_back():
    results = _on_two_processes(_zero3_worker)
    for rank in (0, 1):
        r = results[rank]
        assert r["local"] * 2 == r["whole"] and r["released"]  # each process holds half of every parameter
        assert not r["synced"] and r["got"] == r["expected"], rank
        assert r["same_logits"], rank
        assert r["stepped"] < 1e-6, rank  # and it trains as the unsharded model does
    assert len(results[0]["got"][0]) != len(results[1]["got"][0])  # each generated alone, its own step count
