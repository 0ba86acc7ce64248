"""Scale-out paths on CPU: a 2-process data-parallel step (gloo) equals one process on the combined batch,
and LoRA trains only adapters while its feature network reproduces the base model's features."""

import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from ebft_repro.context import build_context
from ebft_repro.featurizer import FeatureNetwork
from ebft_repro.models import load_causal_lm
from ebft_repro.trainer import train
from ebft_repro.utils import read_json, write_json

from .conftest import fast_config

DDP_SCRIPT = """
import sys
from ebft_repro.config import from_dict
from ebft_repro.trainer import train
from ebft_repro.utils import read_json
import torch
torch.set_num_threads(1)
train(from_dict(read_json(sys.argv[1])), run_dir=sys.argv[2])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "ebft"])
def test_two_process_data_parallel_step_equals_single_process(model_dirs, tmp_path, method):
    cfg = fast_config(model_dirs["llama"], method=method, n_steps=1, save_model=True)
    cfg = replace(cfg, eval=replace(cfg.eval, n_fm_chunks=0), optim=replace(cfg.optim, lr=1e-3))
    write_json(tmp_path / "cfg.json", cfg.to_dict())
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
               str(tmp_path / "ddp.py"), str(tmp_path / "cfg.json"), str(tmp_path / "ddp")]  # fmt: skip
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    assert read_json(tmp_path / "ddp" / "environment.json")["world_size"] == 2
    train(cfg, run_dir=tmp_path / "single")
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    initial = load_causal_lm(str(model_dirs["llama"])).state_dict()
    moved = 0.0
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, atol=2e-5, rtol=1e-4, msg=name)
        moved = max(moved, (value - initial[name]).abs().max().item())
    assert moved > 1e-4  # the step really changed the weights


def test_lora_trains_adapters_only_and_features_come_from_the_base(model_dirs):
    pytest.importorskip("peft")
    cfg = fast_config(model_dirs["llama"], method="ebft", lora_rank=4)
    ctx = build_context(cfg)
    before = {n: p.detach().clone() for n, p in ctx.policy.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in ctx.policy.parameters() if p.requires_grad], lr=1e-2)
    from ebft_repro.ebft import ebft_step

    for step in range(2):
        optimizer.zero_grad()
        ebft_step(ctx, step)
        optimizer.step()
    after = dict(ctx.policy.named_parameters())
    adapters = [n for n in before if "lora_" in n]
    assert adapters and all(not torch.equal(before[n], after[n].detach()) for n in adapters)
    assert all(torch.equal(before[n], after[n].detach()) for n in before if "lora_" not in n)
    assert all(not after[n].requires_grad for n in before if "lora_" not in n)
    reference = FeatureNetwork(load_causal_lm(str(model_dirs["llama"])))
    ids = torch.randint(0, 300, (2, 20))
    torch.testing.assert_close(
        ctx.feature_net.token_features(ids), reference.token_features(ids), atol=1e-5, rtol=0
    )
    # and the adapters really change the policy's own hidden states
    policy_out = ctx.policy(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    base_out = reference.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert not torch.allclose(policy_out, base_out, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_step(model_dirs):
    plain = build_context(fast_config(model_dirs["llama"], method="sft"))
    checkpointed = build_context(fast_config(model_dirs["llama"], method="sft", gradient_checkpointing=True))
    from ebft_repro.steps import sft_step

    sft_step(plain, 0)
    sft_step(checkpointed, 0)
    for (name, a), (_, b) in zip(plain.policy.named_parameters(), checkpointed.policy.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_collectives_run_on_the_training_device(monkeypatch):
    """NCCL cannot reduce CPU tensors: every all_reduce must get a tensor on the training device.

    The `meta` device stands in for a GPU (no data, so the values are not checked here; the two-process
    test above checks them on CPU)."""
    from ebft_repro import distributed

    seen = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, *a, **k: seen.append(tensor.device))
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    device = torch.device("meta")

    assert distributed.reduce_tensor([1.0, 2.0], device).device == device
    layer = torch.nn.Linear(3, 2, device=device)
    layer.weight.grad = torch.zeros_like(layer.weight)  # bias has no gradient on this rank
    distributed.all_reduce_gradients(list(layer.parameters()))
    assert layer.bias.grad is not None and layer.bias.grad.device == device
    assert seen == [device, device]  # one collective per call: the gradients travel as one flat buffer


def test_flat_gradient_reduction_keeps_each_parameter_in_place(monkeypatch):
    from ebft_repro import distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, *a, **k: tensor.mul_(2))  # 2 ranks
    layer = torch.nn.Linear(3, 2)
    layer.weight.grad = torch.arange(6.0).view(2, 3)
    distributed.all_reduce_gradients(list(layer.parameters()))
    assert torch.equal(layer.weight.grad, 2 * torch.arange(6.0).view(2, 3))
    assert torch.equal(layer.bias.grad, torch.zeros(2))
