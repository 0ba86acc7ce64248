"""Parameter counts against real (tiny, random-init) transformers models, and memory-estimate properties."""

from pathlib import Path

import pytest
import torch
import yaml

from ebft_repro.experiments import memory_model, scaling
from ebft_repro.experiments.memory_model import (
    ARCHITECTURES,
    as_architecture,
    count_lora_parameters,
    count_parameters,
    estimate_memory,
    strided_seq_len,
)
from ebft_repro.experiments.scaling import memory_table, to_markdown

QWEN, LLAMA = "Qwen/Qwen2.5-1.5B", "meta-llama/Llama-3.2-1B"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4)


def tiny_model(family: str, **overrides):
    import transformers

    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family]
    config = config_cls(**(TINY | overrides))
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[family]
    torch.manual_seed(0)
    return config, model_cls(config)


@pytest.mark.parametrize(
    "name, published, exact",
    [
        # Published totals (model cards): "1.54B" and "1.23B"/"1.24B", both counting the tied embeddings once.
        (QWEN, 1.54e9, 1_543_714_304),
        (LLAMA, 1.24e9, 1_235_814_400),
    ],
)
def test_paper_models_match_published_totals(name, published, exact):
    n_params = count_parameters(name)
    assert abs(n_params - published) / published < 0.01
    assert n_params == exact


@pytest.mark.parametrize(
    "family, overrides",
    [
        ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
        ("llama", dict(num_key_value_heads=4, tie_word_embeddings=False)),
        ("llama", dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True)),
        ("llama", dict(num_key_value_heads=2, head_dim=32)),  # a*d != h, as in some Llama variants
        ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True)),
        ("qwen2", dict(num_key_value_heads=1, tie_word_embeddings=False)),
    ],
)
def test_count_matches_transformers_model(family, overrides):
    config, model = tiny_model(family, **overrides)
    # parameters() yields a tied weight once, which is the count we want.
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


def test_lora_count_matches_every_decoder_linear():
    config, model = tiny_model("qwen2", num_key_value_heads=2, tie_word_embeddings=True)
    rank = 8
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7 * config.num_hidden_layers
    expected = sum(rank * (m.in_features + m.out_features) for m in linears)
    assert count_lora_parameters(config, rank) == expected


def test_paper_architectures_read_like_configs():
    import transformers

    qwen = ARCHITECTURES[QWEN]
    config = transformers.Qwen2Config(
        vocab_size=qwen.vocab_size,
        hidden_size=qwen.hidden_size,
        intermediate_size=qwen.intermediate_size,
        num_hidden_layers=qwen.n_layers,
        num_attention_heads=qwen.n_heads,
        num_key_value_heads=qwen.n_kv_heads,
        tie_word_embeddings=True,
    )
    assert count_parameters(config) == count_parameters(qwen)


def test_unsupported_config_and_name_raise():
    import transformers

    with pytest.raises(ValueError, match="model_type"):
        as_architecture(transformers.GPT2Config())
    with pytest.raises(ValueError, match="not one of"):
        as_architecture("Qwen/Qwen2.5-7B")


def test_strided_lengths_of_the_paper():
    assert strided_seq_len(1024, 8, 8, 8) == 2040  # K = 127
    assert strided_seq_len(1024, 2, 4, 4) == 3060  # K = 509
    assert strided_seq_len(16, 4, 4, 4) == 28  # spec 3.3 worked example
    with pytest.raises(ValueError, match="stride"):
        strided_seq_len(1024, 5, 8, 8)  # 1008 % 5 != 0


def memory(name=QWEN, **kwargs):
    settings = dict(n_gpus=1, seq_len_total=2040, micro_batch=8, strategy="ddp") | kwargs
    return estimate_memory(name, **settings)


@pytest.mark.parametrize("name", [QWEN, LLAMA])
@pytest.mark.parametrize("lora_rank", [0, 16])
def test_fsdp_shards_optimizer_state_by_gpu_count(name, lora_rank):
    ddp = memory(name, lora_rank=lora_rank)
    for n_gpus in (1, 2, 4, 8):
        fsdp = memory(name, n_gpus=n_gpus, strategy="fsdp", lora_rank=lora_rank)
        assert fsdp["optimizer_state"] == pytest.approx(ddp["optimizer_state"] / n_gpus, rel=1e-12)
        assert memory(name, n_gpus=n_gpus, lora_rank=lora_rank)["total"] == pytest.approx(ddp["total"])
        if n_gpus > 1:
            assert fsdp["total"] < ddp["total"]


def test_full_finetune_state_is_16_bytes_per_parameter():
    parts = memory(QWEN, feature_net=False)
    state = parts["policy_weights"] + parts["gradients"] + parts["optimizer_state"]
    assert state * memory_model.GIB == pytest.approx(16 * count_parameters(QWEN))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("n_gpus", [1, 8])
def test_lora_needs_less_and_shares_the_feature_network(strategy, n_gpus):
    full = memory(LLAMA, n_gpus=n_gpus, strategy=strategy, seq_len_total=3060)
    lora = memory(LLAMA, n_gpus=n_gpus, strategy=strategy, seq_len_total=3060, lora_rank=16)
    assert lora["total"] < full["total"]
    assert lora["feature_net"] == 0.0
    assert full["feature_net"] * memory_model.GIB == 2 * count_parameters(LLAMA)
    assert memory(LLAMA, feature_net=False)["feature_net"] == 0.0


def saved_tensor_bytes(model, n_batch: int, seq_len: int, mask: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one decoder layer (parameters and mask excluded)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    hidden = torch.randn(n_batch, seq_len, model.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(seq_len)[None].expand(n_batch, -1)  # (B, S)
    cos_sin = model.model.rotary_emb(hidden, positions)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.model.layers[0](
            hidden, attention_mask=mask, position_embeddings=cos_sin, position_ids=positions
        )
    excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), mask, *cos_sin]}
    return sum(n_bytes for ptr, n_bytes in storages.items() if ptr not in excluded)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_layer_activation_count_matches_saved_tensors(family, attention):
    config, model = tiny_model(family, num_key_value_heads=2, attn_implementation=attention)
    model = model.to(torch.bfloat16)
    n_batch, seq_len = 2, 64
    allowed = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()[None, None]  # (1, 1, S, S)
    blocked = torch.tensor(torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16)
    mask = (
        allowed
        if attention == "sdpa"
        else torch.where(allowed, torch.zeros((), dtype=torch.bfloat16), blocked)
    )
    measured = saved_tensor_bytes(model, n_batch, seq_len, mask)
    estimated = memory_model.layer_activation_bytes(config, seq_len, n_batch, attention=attention, bf16=True)
    # Exact with torch 2.13 on CPU; the tolerance leaves room for kernels that pad their statistics.
    assert measured == pytest.approx(estimated, rel=0.03), (measured, estimated)


def test_checkpointing_and_sdpa_save_activation_memory():
    checkpointed = memory(QWEN)["activations"]
    full = memory(QWEN, gradient_checkpointing=False)["activations"]
    eager = memory(QWEN, gradient_checkpointing=False, attention="eager")["activations"]
    assert checkpointed < full < eager
    # Without checkpointing, activations grow linearly in S under SDPA (up to the small per-layer mask
    # copy), super-linearly under eager.
    doubled = dict(seq_len_total=4080, gradient_checkpointing=False)
    assert memory(QWEN, **doubled)["activations"] == pytest.approx(2 * full, rel=0.01)
    assert memory(QWEN, **doubled, attention="eager")["activations"] > 2 * eager


def test_logits_and_mask_formulas():
    parts = memory(QWEN)
    assert parts["logits"] * memory_model.GIB == 2040 * 8 * 151936 * 4  # fp32 (b, S, V): over 9 GiB
    assert parts["logits"] > parts["activations"]
    assert parts["attention_mask"] * memory_model.GIB == 2040**2  # one bool (S, S) mask for the batch
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="strategy"):
        memory(strategy="zero2")
    with pytest.raises(ValueError, match="n_gpus"):
        memory(n_gpus=0)
    with pytest.raises(ValueError, match="attention"):
        memory(attention="flash")


def test_memory_table_and_markdown(capsys):
    table = memory_table()
    assert len(table) == 2 * 4 * 2 * 2
    assert set(table["S"]) == {2040, 3060}
    assert (table["total"] > 0).all()
    lines = to_markdown(table).splitlines()
    assert len(lines) == len(table) + 2 and lines[0].startswith("| model |")
    scaling.main([])
    assert capsys.readouterr().out.strip() == to_markdown(table)


def load_yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_accelerate_configs():
    fsdp = load_yaml("accelerate_fsdp_1.5b.yaml")
    assert fsdp["distributed_type"] == "FSDP" and fsdp["mixed_precision"] == "bf16"
    assert fsdp["num_processes"] == 8 and fsdp["num_machines"] == 1
    options = fsdp["fsdp_config"]
    assert options["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert options["fsdp_transformer_layer_cls_to_wrap"] == "Qwen2DecoderLayer"
    assert options["fsdp_sharding_strategy"] == "FULL_SHARD" and options["fsdp_activation_checkpointing"]
    ddp = load_yaml("accelerate_ddp.yaml")
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] > 1


@pytest.mark.parametrize("name", ["accelerate_fsdp_1.5b.yaml", "accelerate_ddp.yaml"])
def test_accelerate_parses_configs(name):
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    config = config_args.load_config_from_file(str(CONFIGS / name))
    assert config.num_processes == load_yaml(name)["num_processes"]


def test_docs_table_is_current():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text()
    assert to_markdown(memory_table()) in doc, "regenerate with: python -m ebft_repro.experiments.scaling"
