"""Parameter counts and per-GPU memory estimates for EBFT at the paper's scale.

The table of ``docs/scaling.md`` built from these estimates, and its command line, are
:mod:`ebft_repro.experiments.scaling`.

Everything here is arithmetic on architecture numbers: no model is built, no device is touched. The
estimates are *lower bounds of the steady-state peak* of one training micro-batch. Not counted: the CUDA
context and caching-allocator fragmentation (typically 0.5-2 GiB per process), communication buffers, the
rollout phase (no grad; its KV cache holds 2 * n_layers * n_kv * d * S * 2 bytes per sequence: 58 MB for
Qwen2.5-1.5B, 100 MB for Llama-3.2-1B, small thanks to GQA) and the frozen network's own forward (no grad;
it runs before the training forward, not alongside it).

Letters: P = parameters, h = hidden size, I = MLP intermediate size, a = attention heads, n_kv = key/value
heads, d = head dim, V = vocabulary, n_layers = decoder layers, S = full strided length L + K * G,
b = micro-batch (sequences), N = GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30
STRATEGIES = ("ddp", "fsdp")
ATTENTIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class Architecture:
    """The numbers of a Llama-style decoder that fix its parameter count and activation sizes."""

    name: str
    n_layers: int
    hidden_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool
    """Biases on q/k/v (Qwen2: yes; Llama: only with ``attention_bias``)."""
    o_bias: bool = False
    mlp_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


# Public architecture numbers, copied from each model's config.json on the Hugging Face hub (no download
# happens here). Qwen2 always puts biases on q/k/v (not o, not the MLP); Llama 3.2 has no biases.
ARCHITECTURES: dict[str, Architecture] = {
    "Qwen/Qwen2.5-1.5B": Architecture(
        name="Qwen2.5-1.5B",
        n_layers=28,
        hidden_size=1536,
        intermediate_size=8960,
        n_heads=12,
        n_kv_heads=2,
        vocab_size=151936,
        head_dim=128,
        tie_word_embeddings=True,
        qkv_bias=True,
    ),
    "meta-llama/Llama-3.2-1B": Architecture(
        name="Llama-3.2-1B",
        n_layers=16,
        hidden_size=2048,
        intermediate_size=8192,
        n_heads=32,
        n_kv_heads=8,
        vocab_size=128256,
        head_dim=64,
        tie_word_embeddings=True,
        qkv_bias=False,
    ),
}


def as_architecture(arch: Architecture | str | Any) -> Architecture:
    """Accept an :class:`Architecture`, a key of :data:`ARCHITECTURES`, or a ``transformers`` config.

    A config object (``LlamaConfig``, ``Qwen2Config`` or one loaded with ``AutoConfig``) is read through its
    standard attribute names. Only the ``llama`` and ``qwen2`` families are supported: others add parameters
    this count does not know about (Qwen3's q/k norms, mixture-of-experts routers).
    """
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch={arch!r} is not one of {sorted(ARCHITECTURES)}; pass a config object")
        return ARCHITECTURES[arch]
    model_type = getattr(arch, "model_type", None)
    if model_type not in ("llama", "qwen2"):
        raise ValueError(f"config.model_type={model_type!r}: only 'llama' and 'qwen2' configs are supported")
    n_heads = arch.num_attention_heads
    head_dim = getattr(arch, "head_dim", None) or arch.hidden_size // n_heads
    attention_bias = bool(getattr(arch, "attention_bias", False))
    return Architecture(
        name=getattr(arch, "name_or_path", "") or model_type,
        n_layers=arch.num_hidden_layers,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        n_heads=n_heads,
        n_kv_heads=getattr(arch, "num_key_value_heads", None) or n_heads,
        vocab_size=arch.vocab_size,
        head_dim=head_dim,
        tie_word_embeddings=bool(arch.tie_word_embeddings),
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=False if model_type == "qwen2" else attention_bias,
        mlp_bias=False if model_type == "qwen2" else bool(getattr(arch, "mlp_bias", False)),
    )


def layer_parameters(arch: Architecture | str | Any) -> int:
    """Parameters of one decoder layer.

    attention:  q: h*(a*d) [+ a*d]   k, v: h*(n_kv*d) [+ n_kv*d] each (GQA: n_kv < a)   o: (a*d)*h [+ h]
    MLP (SwiGLU): gate, up: h*I [+ I] each; down: I*h [+ h]
    RMSNorm: a weight of size h before attention and before the MLP, no bias. RoPE has no parameters.
    """
    arch = as_architecture(arch)
    h, inter = arch.hidden_size, arch.intermediate_size
    attention = 2 * h * arch.q_dim + 2 * h * arch.kv_dim
    attention += (arch.q_dim + 2 * arch.kv_dim) * arch.qkv_bias + h * arch.o_bias
    mlp = 3 * h * inter + (2 * inter + h) * arch.mlp_bias
    return attention + mlp + 2 * h


def count_parameters(arch: Architecture | str | Any) -> int:
    """Exact parameter count: V*h embeddings + n_layers layers + a final RMSNorm (h) + the LM head.

    The LM head (h*V, no bias) shares the embedding matrix when ``tie_word_embeddings`` (both paper models),
    and then adds nothing. Qwen2.5-1.5B: 1,543,714,304; Llama-3.2-1B: 1,235,814,400.
    """
    arch = as_architecture(arch)
    embeddings = arch.vocab_size * arch.hidden_size
    head = 0 if arch.tie_word_embeddings else embeddings
    return embeddings + arch.n_layers * layer_parameters(arch) + arch.hidden_size + head


def count_lora_parameters(arch: Architecture | str | Any, rank: int) -> int:
    """LoRA adapter parameters on every linear layer of every decoder layer (peft ``all-linear``).

    A linear of shape in x out gets A (in x r) and B (r x out): r*(in + out) parameters. The seven per layer:
    q (h, a*d), k and v (h, n_kv*d), o (a*d, h), gate and up (h, I), down (I, h). The LM head is excluded.
    """
    arch = as_architecture(arch)
    h, inter = arch.hidden_size, arch.intermediate_size
    per_layer = 2 * (h + arch.q_dim) + 2 * (h + arch.kv_dim) + 3 * (h + inter)
    return rank * per_layer * arch.n_layers


def strided_seq_len(seq_len: int, stride: int, context_len: int, gen_len: int) -> int:
    """S = L + K*G with K = (L - G - C)/s + 1 blocks (spec section 3.1).

    Paper settings: L=1024, s=C=G=8 gives K=127, S=2040 (code); s=2, C=G=4 gives K=509, S=3060 (translation).
    """
    span = seq_len - gen_len - context_len
    if span < 0 or span % stride:
        raise ValueError(f"stride={stride} must divide seq_len - gen_len - context_len = {span} (>= 0)")
    return seq_len + (span // stride + 1) * gen_len


def layer_activation_bytes(
    arch: Architecture | str | Any, seq_len_total: int, micro_batch: int, *, attention: str, bf16: bool
) -> int:
    """Bytes one decoder layer saves for its backward pass, for b sequences of length S.

    Method of Korthikanti et al. (2022, "Reducing activation recomputation in large transformer models"):
    list the tensors autograd saves. Their GPT layer (GeLU MLP with I = 4h, dropout, LayerNorm) gives
    (34*h + 5*a*S)*S*b bytes in 16-bit. Redone for a transformers Llama/Qwen2 layer (RMSNorm, GQA, SwiGLU,
    no dropout), with w = 2 bytes for bf16 weights (4 for fp32), in bytes per token:

        each RMSNorm (two): fp32 upcast of its input 4h, normalised x w*h,
            weight * x (= input of the next linears) w*h, fp32 rsqrt 4                    2*(4h + 2w*h + 4)
        q, k, v after RoPE; k and v already repeated to a heads (HF's repeat_kv runs
            whenever a mask is passed, so GQA shrinks the KV cache, not these)           3*a*d*w
        attention output (the o projection reads it as a view)                           a*d*w
        SwiGLU: gate and up outputs, silu(gate), their product (input of down)           4*I*w
        SDPA only: logsumexp, fp32 per head                                              4*a
        eager only: fp32 softmax output, plus its bf16 copy under bf16                   (4 [+ 2])*a*S

    plus, under SDPA, one float copy of the (S, S) mask per layer (w*S^2; SDPA turns the boolean mask into
    an additive one and saves it). SwiGLU keeps four I-wide tensors where GeLU keeps two: for Qwen2.5-1.5B
    this is about 2x the 34*h rule. ``tests/test_scaling.py`` checks the count against the tensors a real
    bf16 layer saves on CPU. With fp32 weights under bf16 autocast (this package's default ``train.dtype``)
    the residual stream stays fp32, which adds 2h per RMSNorm (about 5% here).

    Attention scores: SDPA's memory-efficient kernel (the fused kernel that accepts the arbitrary strided
    mask; flash-attention does not) keeps O(S) statistics, so no a*S^2 term: that is the default assumed
    here, and what ``ebft_repro.models`` asks for. Eager attention (the authors' runs) keeps the scores:
    6*a*S^2*b bytes per layer, 2.2 GiB per layer for Qwen2.5-1.5B at S=2040, b=8.

    Returns:
        Bytes (int).
    """
    arch = as_architecture(arch)
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r} is not one of {ATTENTIONS}")
    w = 2 if bf16 else 4
    h, inter, q_dim = arch.hidden_size, arch.intermediate_size, arch.q_dim
    per_token = 2 * (4 * h + 2 * w * h + 4) + 4 * q_dim * w + 4 * inter * w
    if attention == "sdpa":
        per_token += 4 * arch.n_heads
        per_layer = w * seq_len_total**2
    else:
        per_token += (4 + (2 if bf16 else 0)) * arch.n_heads * seq_len_total
        per_layer = 0
    return per_token * seq_len_total * micro_batch + per_layer


def _weight_terms(arch: Architecture, n_gpus: int, strategy: str, lora_rank: int, bf16: bool) -> dict:
    """Bytes of policy weights, gradients and AdamW state on one GPU (see :func:`estimate_memory`)."""
    n_params = count_parameters(arch)
    n_lora = count_lora_parameters(arch, lora_rank)
    n_trainable = n_lora if lora_rank else n_params
    weight_bytes = 2 if bf16 else 4
    adam_bytes = 12 if bf16 else 8  # fp32 master + m + v under bf16; m + v when the weights are fp32
    shards = n_gpus if strategy == "fsdp" else 1
    weights = (n_params + n_lora) * weight_bytes / shards
    grads = n_trainable * weight_bytes / shards
    if strategy == "fsdp":
        # Units are all-gathered one at a time: the root unit (embeddings, final norm, untied head) stays
        # gathered for the whole forward; the current and the prefetched layer add two layers.
        root = count_parameters(arch) - arch.n_layers * layer_parameters(arch)
        layer_lora = n_lora // arch.n_layers
        weights += (root + 2 * (layer_parameters(arch) + layer_lora)) * weight_bytes
        # One layer's full gradients exist before their reduce-scatter (the root's at the end of backward).
        grads += (layer_lora if lora_rank else max(root, layer_parameters(arch))) * weight_bytes
    optimizer_state = n_trainable * adam_bytes / shards
    return {"policy_weights": weights, "gradients": grads, "optimizer_state": optimizer_state}


def estimate_memory(
    arch: Architecture | str | Any,
    *,
    n_gpus: int,
    seq_len_total: int,
    micro_batch: int,
    strategy: str,
    lora_rank: int = 0,
    gradient_checkpointing: bool = True,
    feature_net: bool = True,
    bf16: bool = True,
    attention: str = "sdpa",
) -> dict[str, float]:
    """Per-GPU memory of one EBFT training micro-batch, by component, in GiB.

    With P parameters (P_t trainable: P, or the LoRA adapters) and w = 2 bytes under bf16 (4 otherwise):

    - policy_weights = (P + P_lora)*w, divided by N under ``fsdp`` (ZeRO-3 / FULL_SHARD), which also holds
      the all-gathered root unit (embeddings) and two decoder layers (current + prefetched).
    - gradients = P_t*w (/N under fsdp, plus one unsharded layer or the root unit).
    - optimizer_state = P_t*12 bytes (fp32 master copy + AdamW m + v; 8 bytes without bf16), replicated
      under ``ddp`` and /N under ``fsdp``. Weights + grads + state = 16 bytes per trainable parameter: the
      classic mixed-precision count. PyTorch DDP with fp32 weights under autocast (this package's default
      ``train.dtype``) splits the same 16 bytes as 4 + 4 + 8.
    - feature_net = P*w: the frozen second copy, replicated on every GPU (it is frozen, so sharding it buys
      little); 0 under LoRA, where the base weights with the adapters disabled are the feature network.
    - activations: with gradient checkpointing, each layer keeps only its input, n_layers*h*S*b*w, and the
      backward recomputes one layer at a time, adding that layer's saved tensors
      (:func:`layer_activation_bytes`); without, all n_layers layers keep them.
    - logits = S*b*V*4: the fp32 log-softmax outputs kept for the backward, one (b, S, V) buffer. With
      V = 151,936 this is the largest single activation (9.2 GiB at S=2040, b=8). It is a floor: while
      computing it, ``strided_logprobs`` briefly holds about three such buffers (the fp32 upcast of the
      logits, the gathered generated rows and their temperature-scaled copy), and the backward makes
      gradients of the same size. A chunked or fused cross-entropy would avoid most of this.
    - attention_mask = S^2 bytes: one boolean (S, S) mask shared by the batch (SDPA); 2*S^2 for eager's
      additive bf16 mask. The float copy SDPA saves in each layer is counted under activations.

    Args:
        arch: an :class:`Architecture`, a key of :data:`ARCHITECTURES`, or a ``transformers`` config.
        n_gpus: data-parallel ranks N.
        seq_len_total: full strided length S = L + K*G (see :func:`strided_seq_len`).
        micro_batch: sequences b per forward/backward on one GPU.
        strategy: ``ddp`` (everything replicated) or ``fsdp`` (weights, grads, optimizer state sharded).
        lora_rank: 0 for a full fine-tune, else the LoRA rank r on every linear layer.
        gradient_checkpointing: recompute layer activations in the backward.
        feature_net: count the frozen feature network.
        bf16: bf16 weights/activations with fp32 master weights (else everything fp32).
        attention: ``sdpa`` (no S^2 scores kept) or ``eager`` (scores kept).

    Returns:
        {component: GiB} for the components above, plus ``total``.
    """
    arch = as_architecture(arch)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not one of {STRATEGIES}")
    for name, value in (("n_gpus", n_gpus), ("seq_len_total", seq_len_total), ("micro_batch", micro_batch)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if lora_rank < 0:
        raise ValueError(f"lora_rank={lora_rank} must be >= 0")
    parts = _weight_terms(arch, n_gpus, strategy, lora_rank, bf16)
    parts["feature_net"] = count_parameters(arch) * (2 if bf16 else 4) if feature_net and not lora_rank else 0
    layer = layer_activation_bytes(arch, seq_len_total, micro_batch, attention=attention, bf16=bf16)
    if gradient_checkpointing:
        layer_inputs = arch.n_layers * arch.hidden_size * seq_len_total * micro_batch * (2 if bf16 else 4)
        parts["activations"] = layer_inputs + layer
    else:
        parts["activations"] = arch.n_layers * layer
    parts["logits"] = seq_len_total * micro_batch * arch.vocab_size * 4
    parts["attention_mask"] = seq_len_total**2 * (1 if attention == "sdpa" else (2 if bf16 else 4))
    parts["total"] = sum(parts.values())
    return {name: value / GIB for name, value in parts.items()}
