"""Sampling from sharded weights, on CPU: two gloo processes wrap a tiny Llama in PyTorch's FSDP (version 1,
one unit per decoder layer, FULL_SHARD), so each holds half of every flattened parameter; generation inside
`gathered_for_generation(..., "fsdp", 2)` (what IRLTrainer.sample does under FSDP) equals generation from the
unsharded model on each process, though the two processes need different numbers of steps (synced steps). And
the discriminator's gradients, averaged outside any engine, leave both processes with the same ones.

What does not run here: accelerate refuses FSDP without an accelerator (`accelerate launch --use_fsdp` on CPU:
"There are currently no available devices found"), and DeepSpeed is not installed; the ZeRO-3 branch and the
FSDP path through `accelerate launch` run on a GPU machine (README, Online IQLearn and GAIL)."""

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


def _worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, eos_token_id=EOS, bos_token_id=None, pad_token_id=0)  # fmt: skip
        model = LlamaForCausalLM(config).eval()
        whole = sum(p.numel() for p in model.parameters())
        ids = torch.tensor([[5, 6, 7], [8, 9, 10]])[rank : rank + 1]  # different prompts, different lengths
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        kwargs = dict(max_new_tokens=6 + 4 * rank, seed=0, eos_token_id=EOS, pad_token_id=0)
        expected = decode(model, batch, Decoding("greedy"), 1, **kwargs).completion_ids
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
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_worker, args=(_free_port(), results), nprocs=2)
    for rank in (0, 1):
        r = results[rank]
        assert r["local"] < r["whole"]  # each process holds a shard only
        assert r["synced"] and r["got"] == r["expected"], rank
        assert r["grads"] == ([[0.5, 0.5]], [1.0])
    assert len(results[0]["got"][0]) != len(results[1]["got"][0])  # the two processes took different step counts
