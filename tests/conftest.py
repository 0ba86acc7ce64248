"""Session fixtures: tiny random-init models of two architectures (no network)."""

import pytest
import torch

# Tiny models gain nothing from threads, and OpenMP spin-waiting collapses when other processes (sandbox
# workers, a second pytest) share the 2 cores.
torch.set_num_threads(1)


def _llama(vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    model.config._attn_implementation = "sdpa"
    return model


def _gpt2(vocab: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=4,
        n_head=4,
        n_positions=256,
        eos_token_id=None,
        bos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    return model


@pytest.fixture(scope="session")
def tiny_llama():
    return _llama()


@pytest.fixture(scope="session")
def tiny_gpt2():
    return _gpt2()


@pytest.fixture(params=["llama", "gpt2"])
def any_model(request):
    return _llama() if request.param == "llama" else _gpt2()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Saved random-init Llama and GPT-2 models sharing a small BPE tokenizer trained here (offline)."""
    from ebft_repro import config
    from ebft_repro.data import load_task
    from ebft_repro.models import make_causal_lm
    from ebft_repro.pretrain import train_tokenizer

    data = small_data_config()
    documents = []
    for task in config.TASKS:
        split = load_task(task, data)
        documents += [ex.prompt + ex.completion for ex in split.train[:200]]
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer(documents, 400, root / "tokenizer")
    dirs = {}
    for arch in ("llama", "gpt2"):
        base = config.BaseModelConfig(
            architecture=arch, hidden_size=32, n_layers=2, n_heads=2, intermediate_size=64
        )
        torch.manual_seed(0)
        model = make_causal_lm(
            base,
            len(tokenizer),
            bos_id=tokenizer.bos_token_id,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
        )
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
        dirs[arch] = root / arch
    return dirs


def small_data_config():
    from ebft_repro import config

    return config.DataConfig(
        seq_len=64, n_train=80, n_val=6, n_test=6, n_val_chunks=2, max_chars_per_file=600
    )


def fast_config(model_dir, *, task="qa_code", method="ebft", seed=0, n_steps=2, **train_kwargs):
    """A tiny run that takes seconds: L=64, 2 chunks per step, 2 eval prompts."""
    from dataclasses import replace

    from ebft_repro import config

    cfg = config.get_preset("tiny", task, method, seed=seed)
    return replace(
        cfg,
        model=str(model_dir),
        data=small_data_config(),
        train=replace(
            cfg.train, n_steps=n_steps, chunks_per_step=2, checkpoint_every_steps=1, **train_kwargs
        ),
        eval=replace(cfg.eval, every_steps=2, n_prompts=2, n_samples=2, max_new_tokens=12, n_fm_chunks=1),
        rlvr=replace(cfg.rlvr, prompts_per_step=2, max_new_tokens=12),
        optim=replace(cfg.optim, lr=1e-2, warmup_frac=0.0),
    )
