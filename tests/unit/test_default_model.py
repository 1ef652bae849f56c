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
    assert result["cls"] == "LlavaForConditionalGeneration" and result["vlmtune"] is False
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
    assert tensors["linear_1.weight"].shape == (576, 384) and tensors["linear_2.weight"].shape == (576, 576)
    assert info["steps"] > 0 and "held_out" in info
