"""The embedded default model, built from the two wheels (no download)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vlmtune.models.weight_import import dinov2_onnx_path, load_dinov2
from vlmtune.models.default import PROJECTOR_FILE, DefaultBaseSpec, ensure_default_base, load_projector


def test_dinov2_conversion_matches_the_onnx_original():
    ort = pytest.importorskip("onnxruntime")
    import onnx

    graph = onnx.load(str(dinov2_onnx_path()))
    final_norm = [n.output[0] for n in graph.graph.node if n.output[0].startswith("/backbone/layernorm/")][-1]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(final_norm, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = session.run([final_norm], {"input_image": x})[0]
    with torch.no_grad():
        got = load_dinov2()(torch.from_numpy(x)).last_hidden_state.numpy()
    assert got.shape == (1, 257, 384)
    assert np.abs(got - want).max() < 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMTUNE_CACHE", str(cache))
    yield ensure_default_base()
    mp.undo()


@pytest.mark.slow
def test_default_base_loads_with_plain_transformers(built):
    code = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(built)!r}); p = AutoProcessor.from_pretrained({str(built)!r})\n"
        "msgs = [{'role': 'user', 'content': 'What is the capital of France? One word.'}]\n"
        "ids = p.tokenizer(p.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), return_tensors='pt')\n"
        "out = m.generate(**ids, max_new_tokens=8, do_sample=False)\n"
        "print(json.dumps({'cls': type(m).__name__, 'vlmtune': 'vlmtune' in sys.modules,\n"
        "  'answer': p.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True),\n"
        "  'proj': m.model.multi_modal_projector.linear_1.weight[:2, :4].tolist()}))\n"
    )
    result = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert result["cls"] == "AyaVisionForConditionalGeneration" and result["vlmtune"] is False
    assert "Paris" in result["answer"]  # the real pretrained SmolLM2 is inside
    shipped, spec, _ = load_projector(PROJECTOR_FILE)
    assert torch.allclose(torch.tensor(result["proj"]), shipped["linear_1.weight"][:2, :4], atol=1e-6)


@pytest.mark.slow
def test_second_call_reuses_the_cache(built):
    assert ensure_default_base() == built
    assert (built / "model.safetensors").is_file() and not built.with_name(built.name + ".partial").exists()


def test_packaged_projector_matches_the_spec():
    tensors, spec, info = load_projector(PROJECTOR_FILE)
    assert spec == DefaultBaseSpec(**{**spec.__dict__})
    # Aya's connector: LayerNorm over 2x2 concatenated DINOv2 patches (4 x 384), SwiGLU 544 -> 272 gated -> 576.
    assert spec.pixel_shuffle == 2 and spec.image_tokens == 64 and spec.connector_width == 544
    assert tensors["layernorm.weight"].shape == (1536,) and tensors["linear_1.weight"].shape == (544, 1536)
    assert tensors["linear_2.weight"].shape == (576, 272) and info["steps"] > 0 and "held_out" in info
    assert PROJECTOR_FILE.stat().st_size < 2 * 1024 * 1024  # git carries files under 2 MB


def test_the_llava_layout_projector_still_loads_as_its_own_spec():
    """Artifacts written before pixel_shuffle existed are read as the LLaVA layout (145 tokens)."""
    from vlmtune.models.default import ASSETS

    tensors, spec, _ = load_projector(ASSETS / "default_projector-llava.safetensors")
    assert (spec.pixel_shuffle, spec.image_size, spec.image_tokens) == (1, 168, 145)
    assert tensors["linear_1.weight"].shape == (576, 384)


def test_pixel_shuffle_needs_an_even_patch_grid_and_no_cls():
    from vlmtune.errors import VlmtuneError

    assert DefaultBaseSpec(image_size=168).image_tokens == 36  # 12x12 patches -> 6x6
    with pytest.raises(VlmtuneError, match="pixel_shuffle=2 needs a patch grid divisible by it"):
        DefaultBaseSpec(image_size=182).check()  # 13x13 patches
    with pytest.raises(VlmtuneError, match="vision_feature_select_strategy 'default'"):
        DefaultBaseSpec(vision_feature_select_strategy="full").check()
