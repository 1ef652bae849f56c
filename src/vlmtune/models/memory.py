"""Training memory per GPU, derived from the model's shapes (``models/shapes.py``): ``vlmtune plan``.

Every term is a count of bytes the step keeps alive at its peak (the start of the backward pass),
derived from what autograd saves per token; bench/README.md ("Memory planner") writes the
formulas out and checks them against measured peaks. No constant is fitted to the measurements.
Exact for Llama/Mistral-style decoders and CLIP/SigLIP-style vision towers with SDPA; the
projector, cross-attention and perceiver terms are first-order estimates (they are small).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vlmtune.models.shapes import ModelShape

GiB = 2**30
# NF4 (bitsandbytes, double quantization): 4 bits + an 8-bit absmax per 64 weights + an fp32
# scale per 256 absmax values.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1 + 4 / 4096  # LLM.int8: a byte per weight + an fp32 scale per row (4096 wide)
LOGIT_BYTES = 2 + 4 + 4  # bf16 logits + their fp32 copy + fp32 log-softmax, per vocabulary entry
USABLE = 0.9  # share of a GPU's memory a step may use (CUDA context, allocator fragmentation)


@dataclass(frozen=True)
class Workload:
    """One training step as configured: what the activations scale with, and the precision policy."""

    batch: int  # per device
    seq: int  # tokens per sample (image tokens + prompt + answer)
    answer_tokens: int  # supervised positions per sample (vlmtune's LM head runs only there)
    weights_bytes: int = 2  # bf16 (GPU) or fp32
    quantization: str = "none"
    autocast: bool = True  # bf16 autocast: LoRA inputs are saved as bf16 copies (fp32 without)
    # PEFT's cast of each LoRA input to the adapters' fp32; fit turns it off under autocast
    # (disable_input_dtype_casting), so only a run without autocast keeps it.
    input_casts: bool = False
    dropout: bool = True  # LoRA dropout > 0: one more copy per wrapped linear (+ its mask)
    mask_bytes: int = 1  # CUDA's fused dropout keeps a bool mask; the CPU kernel a mask in the input dtype (4)
    r: int = 16
    checkpointing: bool = False
    optim: str = "adamw_torch_fused"
    attention: str = "sdpa"  # sdpa, flash_attention_2 or eager
    vision_trains: bool = False  # gradients flow through the vision tower (vision LoRA or full)
    vision_runs: bool = True  # False with the feature cache: the frozen tower never runs in a step
    projector_trains: bool = True
    all_logits: bool = False  # stock HF loss: LM head and fp32 log-softmax at every position
    logits_to_keep: bool = True  # the family's forward takes vlmtune's boolean logits_to_keep


def optimizer_bytes(optim: str) -> float:
    """Optimizer state per trainable parameter, by transformers' optimizer name."""
    if optim.startswith("sgd") or optim in ("lomo", "adalomo"):
        return 0  # no momentum by default
    if "adafactor" in optim:
        return 0.1  # factored second moment, no first moment: a few bytes per row and column
    if "4bit" in optim:
        return 1
    if "8bit" in optim:
        return 2 if "adam" in optim else 1
    if "lion" in optim or optim.startswith(("rmsprop", "adagrad")):
        return 4
    return 8  # AdamW and relatives: two fp32 moments


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, by item."""

    weights: float
    adapters: float  # trainable copies: fp32 LoRA weights and fp32 masters of what trains whole
    grads: float
    optimizer: float
    activations: float
    logits: float
    gathered: float = 0.0  # FSDP / ZeRO-3: full layers gathered for compute (two, with prefetch)
    buckets: float = 0.0  # DDP: gradient buckets for the all-reduce
    cpu: float = 0.0  # offloaded to CPU RAM (not on the GPU)

    @property
    def total(self) -> float:
        return (self.weights + self.adapters + self.grads + self.optimizer + self.activations + self.logits
                + self.gathered + self.buckets)

    def gib(self) -> dict:
        items = {k: round(v / GiB, 2) for k, v in vars(self).items()}
        return {**items, "total": round(self.total / GiB, 2)}


# ---------------------------------------------------------------- activations, per token
def compute_bytes(w: Workload) -> int:
    return 2 if w.autocast or w.weights_bytes == 2 or w.quantization != "none" else 4


def lora_bytes(w: Workload) -> int:
    """Bytes per input element a LoRA-wrapped linear keeps of its own: lora_A's saved input. With
    dropout that is the dropout's output plus its mask, one per module. PEFT's cast to the adapters'
    fp32 (when on) leaves lora_A a copy of its own, which autocast casts back to bf16."""
    return (2 if w.autocast else 4) + (w.mask_bytes if w.dropout else 0)


def own_copies(w: Workload) -> bool:
    """Whether each wrapped linear keeps a copy of its input (dropout, or a cast that copies), or
    lora_A keeps the very tensor the frozen layer read, shared by q/k/v and by gate/up."""
    casts_copy = w.input_casts and (w.autocast or w.weights_bytes == 2)  # fp32 -> fp32 is no copy
    return w.dropout or casts_copy


def lm_layer_bytes(shape: ModelShape, w: Workload) -> float:
    """Bytes one Llama/Mistral decoder layer keeps per token for backward, LoRA excluded.

    Frozen linears keep nothing (their weights need no gradient); what stays is:
    - two RMSNorms, each its fp32 input: 2 x 4h;
    - attention: q, k, v after RoPE and the output: c (2 hq + 2 kv). With a padding mask (batch > 1)
      transformers' SDPA path repeats k/v to all heads (kv = hq) and the kernel keeps the additive
      mask row: c s. flash_attention_2 keeps k/v at their own heads and no mask; eager keeps the
      fp32 softmax and its bf16 copy: 6 heads s;
    - gated MLP: SiLU input and output, up_proj output: 3 c i;
    - 4-bit base (bitsandbytes keeps the input of every 4-bit linear) or full fine-tuning: the
      inputs of the linears, c (2h + hq + i), and for full the norms' outputs, 2 c h.
    """
    d, c, s = shape.lm, compute_bytes(w), w.seq
    hq, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    padded = w.batch > 1
    native_gqa = w.attention == "flash_attention_2" or (w.attention == "sdpa" and not padded)
    attention = c * (2 * hq + 2 * (kv if native_gqa else hq))
    if w.attention == "eager":
        attention += 6 * d.heads * s
    elif w.attention == "sdpa" and padded:
        attention += c * s
    frozen_inputs = c * (2 * d.hidden + hq + d.intermediate) if (w.quantization != "none" or shape.full) else 0
    norms = 2 * 4 * d.hidden + (2 * c * d.hidden if shape.full else 0)
    return norms + attention + 3 * c * d.intermediate + frozen_inputs


def lora_token_bytes(shape: ModelShape, w: Workload, part: str) -> float:
    """Per token, all layers of ``part``: lora_A's inputs (a copy each, or the distinct tensors they
    share: ``own_copies``) + lora_A's output (r wide)."""
    inputs = (lora_bytes(w) * shape.lora_inputs[part] if own_copies(w)
              else (2 if w.autocast else 4) * shape.lora_distinct_inputs[part])
    return inputs + (2 if w.autocast else 4) * w.r * shape.lora_modules[part]


def vision_layer_bytes(shape: ModelShape, w: Workload) -> float:
    """One ViT layer per vision token: two norms' inputs, q/k/v/output, the MLP's activation tensors."""
    v, c = shape.vision, compute_bytes(w)
    full_inputs = c * (3 * v.hidden + v.intermediate) if shape.full else 0
    return 2 * v.norm_bytes * v.hidden + 4 * c * v.hidden + v.mlp_tensors * c * v.intermediate + full_inputs


def _stack(tokens: float, layers: int, per_layer: float, lora: float, checkpoint_width: float, gc: bool):
    """(kept for the whole backward, one layer's worth recomputed at a time) for a stack of layers."""
    if not gc:
        return tokens * (layers * per_layer + lora), 0.0
    return tokens * layers * checkpoint_width, tokens * (per_layer + lora / max(layers, 1))


def activations(shape: ModelShape, w: Workload) -> float:
    return sum(activation_parts(shape, w))


def activation_parts(shape: ModelShape, w: Workload) -> tuple[float, float]:
    """(bytes kept from the forward until backward, bytes of the one layer that gradient
    checkpointing recomputes at a time: 0 without it)."""
    c, d = compute_bytes(w), shape.lm
    tokens = w.batch * w.seq
    lm_kept, lm_layer = _stack(tokens, d.layers, lm_layer_bytes(shape, w), lora_token_bytes(shape, w, "lm"),
                               c * d.hidden, w.checkpointing)
    kept = lm_kept + tokens * 4 * d.hidden  # + the final norm's fp32 input
    layer = lm_layer
    pictures = w.batch * shape.picture.vision  # one picture per sample
    if shape.vision is not None and w.vision_trains:
        v_kept, v_layer = _stack(pictures, shape.vision.layers, vision_layer_bytes(shape, w),
                                 lora_token_bytes(shape, w, "vision"), c * shape.vision.hidden, w.checkpointing)
        kept += v_kept
        layer = max(layer, v_layer)  # recomputed one at a time, never both at once
    elif shape.vision is not None and w.vision_runs:
        # A frozen tower runs without autograd state; its hidden states (kept for feature-layer
        # selection) and one layer's MLP live for the forward only.
        kept += pictures * c * ((shape.vision.layers + 1) * shape.vision.hidden + shape.vision.intermediate)
    if w.projector_trains or w.vision_trains:
        kept += pictures * c * shape.projector_width
    kept += cross_attention_bytes(shape, w)
    return kept, layer


def cross_attention_bytes(shape: ModelShape, w: Workload) -> float:
    """Cross-attention LMs (Mllama): k/v of the vision states in each cross-attention layer."""
    text = shape.source.config.get_text_config()
    layers = len(getattr(text, "cross_attention_layers", None) or [])
    if not layers:
        return 0.0
    d, c = shape.lm, compute_bytes(w)
    # Without copies of their own, the adapters on k/v keep cross_attention_states, one tensor for all layers.
    copies = 2 * lora_bytes(w) * d.hidden if shape.lora_modules["lm"] and own_copies(w) else 0
    per_token = c * 2 * d.heads * d.head_dim + copies
    return layers * w.batch * shape.picture.vision * per_token


def logits_bytes(shape: ModelShape, w: Workload) -> float:
    vocab = shape.lm.vocab
    if w.all_logits:
        return w.batch * w.seq * vocab * LOGIT_BYTES
    if not w.logits_to_keep:  # LM head everywhere in bf16, sliced to the answer before the loss
        return w.batch * (w.seq * vocab * 2 + w.answer_tokens * vocab * (LOGIT_BYTES - 2))
    return w.batch * w.answer_tokens * vocab * LOGIT_BYTES


# ---------------------------------------------------------------- parameters and their state
def weights_bytes(shape: ModelShape, w: Workload) -> float:
    if shape.full:  # fit keeps fp32 masters of every trainable non-LoRA parameter
        return shape.total * 4
    kept = shape.total - (shape.quantizable if w.quantization != "none" else 0)
    per = {"4bit": NF4_BYTES, "8bit": INT8_BYTES}.get(w.quantization, 0)
    return kept * w.weights_bytes + shape.quantizable * per + (shape.whole * 4 if shape.whole else 0)


def single_gpu(shape: ModelShape, w: Workload) -> Memory:
    """Everything on one GPU (also what each DDP process holds, buckets aside)."""
    trainable = shape.trainable
    return Memory(weights=weights_bytes(shape, w), adapters=sum(shape.lora.values()) * 4, grads=trainable * 4,
                  optimizer=trainable * optimizer_bytes(w.optim), activations=activations(shape, w),
                  logits=logits_bytes(shape, w))


def largest_layer(shape: ModelShape, w: Workload) -> float:
    per_layer = shape.params["lm"] / max(shape.lm.layers, 1)
    return per_layer * (4 if shape.full else w.weights_bytes)


def layout(shape: ModelShape, w: Workload, mode: str, gpus: int) -> Memory:
    """Per-GPU memory of one way of running: single, ddp, zero2, zero3 (= FSDP full shard),
    zero3_offload (parameters and optimizer state in CPU RAM), device_map (one process, the model
    split over the GPUs, the seed's way)."""
    one = single_gpu(shape, w)
    n = max(gpus, 1)
    if mode == "single":
        return one
    if mode == "ddp":
        return replace(one, buckets=one.grads)
    if mode == "zero2":
        return replace(one, grads=one.grads / n, optimizer=one.optimizer / n)
    if mode == "zero3":
        return replace(one, weights=one.weights / n, adapters=one.adapters / n, grads=one.grads / n,
                       optimizer=one.optimizer / n, gathered=2 * largest_layer(shape, w))
    if mode == "zero3_offload":
        return replace(one, weights=0, adapters=0, grads=one.grads / n, optimizer=0,
                       gathered=2 * largest_layer(shape, w), cpu=one.weights + one.adapters + one.optimizer)
    if mode == "device_map":  # ideal balance: accelerate spreads the layers by size
        return Memory(**{k: v / n for k, v in vars(one).items()})
    raise ValueError(mode)


def largest_batch(shape: ModelShape, w: Workload, mode: str, gpus: int, usable: float, limit: int = 4096) -> int:
    """The largest per-device batch whose step fits in ``usable`` bytes (0: not even 1)."""
    def fits(b: int) -> bool:
        return layout(shape, replace(w, batch=b), mode, gpus).total <= usable

    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= limit and fits(high):
        low, high = high, high * 2
    while high - low > 1:  # memory grows with the batch: bisect
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def gpus_needed(shape: ModelShape, w: Workload, mode: str, usable: float, most: int = 64) -> int | None:
    """Fewest GPUs for which ``mode`` fits the configured batch (None: not within ``most``)."""
    for n in range(1, most + 1):
        if layout(shape, w, mode, n).total <= usable:
            return n
    return None
