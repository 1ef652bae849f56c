"""model.max_image_tokens: a 12 MP phone photo through every family's processor at the real checkpoint settings.

Processors pair the tiny word-level tokenizers of tests/families_tiny*.py with the image-processor
settings of the published checkpoints (their preprocessor_config.json where tests/data holds it,
else the published values below), so the image-token counts are the real ones. Models are the tiny
random ones, rebuilt with their vision tower at the checkpoint's resolution.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import families_tiny as A
import families_tiny_b as B
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.registry import REGISTRY, family_for
from vlmtune.models.resolution import image_tokens_in, limit_image_tokens, sequence_stats

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data" / "model-configs"
PROMPT, ANSWER = "Describe this picture.", "a white rook"
PHOTO = (4032, 3024)  # 12 MP, landscape, as a phone writes it

# family -> the preset in configs/ (its model.name names the checkpoint whose settings we use)
PRESETS = {
    "llava": "llava-1.5-7b.yaml", "llava_next": "llava-next-mistral-7b.yaml", "qwen2_vl": "qwen2-vl-2b-qlora.yaml",
    "qwen2_5_vl": "qwen2.5-vl-7b.yaml", "paligemma": "paligemma-3b-224.yaml", "idefics": "idefics-9b-instruct.yaml",
    "idefics2": "idefics2-8b.yaml", "idefics3": "idefics3-8b.yaml", "smolvlm": "smolvlm2-256m.yaml",
    "mllama": "llama-3.2-11b-vision.yaml", "gemma3": "gemma-3-4b-it.yaml",
    "qwen3_vl": "qwen3-vl-4b.yaml",
    "llava_onevision": "llava-onevision-qwen2-7b.yaml",
    "internvl": "internvl3-1b.yaml",
    "mistral3": "mistral-small-3.1-24b.yaml", "lfm2_vl": "lfm2.5-vl-1.6b.yaml",
    "aya_vision": "photos-default.yaml",
}
# Image tokens of the 4032x3024 photo, hand-computed from the processors' rules:
# (checkpoint settings, preset). Qwen: smart_resize to 3024x4032 -> 216x288 patches of 14 = 108x144
# merged tokens; max_pixels 1024*28^2 -> 756x1008 px = 27x36. LLaVA-NeXT: 672x672 grid, unpadded
# to 36 of 48 feature rows: 576 base + 36*48 + 36 newlines. Idefics3: 1456x1092 -> 4x3 tiles + 1
# global of 169; preset 1092 px -> 1092x1092 after rounding up to tiles, 3x3 + 1. SmolVLM: 4x3 + 1
# of 64, preset 3x3 + 1. Idefics2: 5 sub-images of 64. Cross-attention families: 1 token.
PHOTO_TOKENS = {
    "aya_vision": (64, 64),  # the embedded default: squashed to 224 px, 16x16 patches shuffled 2x2
    "llava": (576, 576), "llava_next": (2340, 2340), "qwen2_vl": (15552, 972), "qwen2_5_vl": (15552, 972),
    "paligemma": (256, 256), "idefics": (1, 1), "idefics2": (320, 320), "idefics3": (2197, 1690),
    "smolvlm": (832, 640), "mllama": (1, 1), "gemma3": (256, 256),
    # Qwen3-VL (32 px per token): 3024x4032 -> 94 x 126 = 11,844; max_pixels 1024*32^2 -> 864x1152 px = 27x36.
    "qwen3_vl": (11844, 972),
    # LLaVA-OneVision: 1920x2304 grid (5x6 tiles of 384), unpadded to 121 x 162 features, scaled by anyres_max_9
    # to 70 x 93 + 70 newlines + 729 base; preset grids of <= 3 tiles: 1x2, unpadded to 27 x 36 + 27 + 729.
    "llava_onevision": (7309, 1728),
    # InternVL: 4:3 -> a 4x3 grid of 448 px tiles + thumbnail = 13 x 256 + <img></img>; preset max_patches 6 -> 3x2 + 1.
    "internvl": (3330, 1794),
    # Mistral 3: longest edge 1540 -> 1540x1155 px = 55x42 tokens of 28 px + 42 row ends; preset 896 px
    # -> 896x672 = 32x24 + 24.
    "mistral3": (2352, 792),
    # LFM2-VL: over 256 x 32^2 x 2 px, so tiled: grid 3x2 of 512 px (aspect 1.5 closest to 4:3) = 1536 + a
    # 576x416 thumbnail (18x13 = 234); preset max_tiles 3 -> grid 2x1 = 512 + 234.
    "lfm2_vl": (1770, 746),
}
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6 config.json


def jpeg_photo(path: Path, size=PHOTO):
    """A JPEG of ``size`` written and read back, as a phone photo arrives."""
    from PIL import Image

    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    rgb = np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=85)
    with Image.open(path) as img:
        return img.convert("RGB")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return jpeg_photo(tmp_path_factory.mktemp("photo") / "IMG_0001.jpg")


def _rebuilt(model, **changes):
    """The tiny model again, from its config with ``changes`` (dotted keys into sub-configs)."""
    config = model.config.to_dict()
    for key, value in changes.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    torch.manual_seed(0)
    return type(model)(type(model.config).from_dict(config)).eval()


def real(family: str):
    """(tiny model at the checkpoint's vision resolution, processor with the checkpoint's image settings)."""
    import transformers as tf

    from vlmtune.models.families.idefics import smolvlm_processor_class
    from vlmtune.models.families.mllama import mllama_processor_class
    from vlmtune.models.families.qwen import images_only

    if family == "aya_vision":  # the embedded default's own processor (models/default.py) at its 224 px
        import tiny as T
        from vlmtune.models.default import DefaultBaseSpec, build_processor

        model, _ = T.aya_default()
        return _rebuilt(model, **{"vision_config.image_size": 224}), build_processor(T.tokenizer(), DefaultBaseSpec())
    if family == "llava":  # llava-1.5-7b-hf: the exact preprocessor/processor configs
        model, tiny = A.llava15()
        images = tf.CLIPImageProcessorPil.from_dict(json.loads((DATA / "llava-hf__llava-1.5-7b-hf/preprocessor_config.json").read_text()))
        proc = tf.LlavaProcessor(images, tiny.tokenizer, patch_size=14, vision_feature_select_strategy="default",
                                 num_additional_image_tokens=1, image_token="<image>", chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.image_size": 336}), proc
    if family == "llava_next":  # llava-v1.6-mistral-7b-hf: 336 px tiles, the five pinpoints
        model, tiny = A.llava_next("mistral")
        images = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                               image_grid_pinpoints=NEXT_PINPOINTS)
        proc = tf.LlavaNextProcessor(images, tiny.tokenizer, patch_size=14, vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1, image_token="<image>", chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.image_size": 336, "image_grid_pinpoints": NEXT_PINPOINTS}), proc
    if family in ("qwen2_vl", "qwen2_5_vl"):  # the checkpoints' preprocessor_config.json (tiny vision is real-shaped)
        version, ckpt, cls = (("2", "Qwen__Qwen2-VL-2B-Instruct", tf.Qwen2VLProcessor) if family == "qwen2_vl" else
                              ("2.5", "Qwen__Qwen2.5-VL-7B-Instruct", tf.Qwen2_5_VLProcessor))
        model, tiny = A.qwen_vl(version)
        images = tf.Qwen2VLImageProcessorPil.from_dict(json.loads((DATA / ckpt / "preprocessor_config.json").read_text()))
        return model, images_only(cls)(images, tiny.tokenizer, chat_template=tiny.chat_template)
    if family == "paligemma":  # paligemma-3b-pt-224: 224 px, 256 image tokens
        model, tiny = A.paligemma()
        images = tf.SiglipImageProcessorPil(size={"height": 224, "width": 224})
        images.image_seq_length = 256
        return _rebuilt(model, **{"vision_config.image_size": 224}), tf.PaliGemmaProcessor(images, tiny.tokenizer)
    if family == "idefics":  # idefics-9b-instruct: 224 px
        model, tiny = B.idefics()
        return (_rebuilt(model, **{"vision_config.image_size": 224}),
                tf.IdeficsProcessor(tf.IdeficsImageProcessor(image_size=224), tiny.tokenizer))
    if family == "idefics2":  # idefics2-8b: splitting on, 378-980 px, 64 perceiver latents
        model, tiny = B.idefics2()
        images = tf.Idefics2ImageProcessor(do_image_splitting=True, size={"shortest_edge": 378, "longest_edge": 980})
        return (_rebuilt(model, **{"vision_config.image_size": 980, "perceiver_config.resampler_n_latents": 64}),
                tf.Idefics2Processor(images, tiny.tokenizer, image_seq_len=64))
    if family == "idefics3":  # Idefics3-8B-Llama3: longest_edge 4 x 364, tiles of 364 (169 tokens each)
        model, tiny = B.idefics3()
        images = tf.Idefics3ImageProcessor(do_image_splitting=True, size={"longest_edge": 1456},
                                           max_image_size={"longest_edge": 364})
        return (_rebuilt(model, **{"vision_config.image_size": 364, "vision_config.patch_size": 14}),
                tf.Idefics3Processor(images, tiny.tokenizer, image_seq_len=169))
    if family == "smolvlm":  # SmolVLM(2)-256M: longest_edge 4 x 512, tiles of 512 / patch 16, scale factor 4 (64 tokens)
        model, tiny = B.smolvlm()
        images = tf.SmolVLMImageProcessor(do_image_splitting=True, size={"longest_edge": 2048},
                                          max_image_size={"longest_edge": 512})
        return (_rebuilt(model, **{"vision_config.image_size": 512, "vision_config.patch_size": 16, "scale_factor": 4}),
                smolvlm_processor_class()(images, tiny.tokenizer, image_seq_len=64))
    if family == "mllama":  # Llama-3.2-11B-Vision: 560 px tiles, up to 4
        model, tiny = B.mllama()
        ckpt = DATA / "meta-llama__Llama-3.2-11B-Vision-Instruct"
        images = tf.MllamaImageProcessor.from_dict(json.loads((ckpt / "preprocessor_config.json").read_text()))
        ratios = json.loads((ckpt / "config.json").read_text())["vision_config"]["supported_aspect_ratios"]
        return (_rebuilt(model, **{"vision_config.image_size": 560, "vision_config.max_num_tiles": 4,
                                   "vision_config.supported_aspect_ratios": ratios}),
                mllama_processor_class()(images, tiny.tokenizer))
    if family == "gemma3":  # gemma-3-4b-it: one 896 px view, 64x64 patches pooled to 256 tokens, no pan & scan
        import families_tiny_c as C

        model, tiny = C.gemma3()
        images = tf.Gemma3ImageProcessorPil(size={"height": 896, "width": 896})
        proc = type(tiny)(images, tiny.tokenizer, chat_template=tiny.chat_template, image_seq_length=256)
        return _rebuilt(model, **{"vision_config.image_size": 896, "mm_tokens_per_image": 256}), proc
    if family == "mistral3":  # Mistral-Small-3.1-24B: longest edge 1540 px, patch 14, spatial merge 2
        import families_tiny_d as D

        from vlmtune.models.families.mistral3 import pixtral_processor_class

        model, tiny = D.mistral3()
        ckpt = DATA / "mistralai__Mistral-Small-3.1-24B-Instruct-2503"
        images = tf.PixtralImageProcessorPil.from_dict(json.loads((ckpt / "preprocessor_config.json").read_text()))
        proc = pixtral_processor_class()(images, tiny.tokenizer, patch_size=14, spatial_merge_size=2,
                                         chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.image_size": 1540}), proc
    if family == "qwen3_vl":  # Qwen3-VL-4B: its preprocessor_config.json (patch 16, merge 2), the tiny rebuilt at patch 16
        import families_tiny_e as E

        model, tiny = E.qwen3_vl()
        images = tf.Qwen2VLImageProcessorPil.from_dict(json.loads((DATA / "Qwen__Qwen3-VL-4B-Instruct/preprocessor_config.json").read_text()))
        return _rebuilt(model, **{"vision_config.patch_size": 16}), images_only(tf.Qwen3VLProcessor)(
            images, tiny.tokenizer, chat_template=tiny.chat_template)
    if family == "lfm2_vl":  # LFM2.5-VL-1.6B: 16 px patches, 512 px tiles (2-10) + thumbnail, 64-256 tokens a view
        import families_tiny_d as D

        from vlmtune.models.families.lfm2_vl_images import lfm2_vl_image_processor_class

        model, tiny = D.lfm2_vl()
        ckpt = DATA / "LiquidAI__LFM2.5-VL-1.6B"
        images = lfm2_vl_image_processor_class().from_dict(json.loads((ckpt / "preprocessor_config.json").read_text()))
        proc = type(tiny)(images, tiny.tokenizer, chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.patch_size": 16, "vision_config.num_patches": 256}), proc
    if family == "llava_onevision":  # llava-onevision-qwen2-7b-ov-hf: 384 px tiles, 36 grids, 729 tokens a view
        import families_tiny_e as E
        from vlmtune.models.families.llava_onevision import onevision_processor_class

        model, tiny = E.llava_onevision()
        images = tf.LlavaOnevisionImageProcessorPil()  # the class defaults are the checkpoint's preprocessor settings
        proc = onevision_processor_class()(images, tiny.tokenizer, num_image_tokens=729, vision_feature_select_strategy="full",
                                           chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.image_size": 384, "image_grid_pinpoints": images.image_grid_pinpoints}), proc
    if family == "internvl":  # InternVL3-1B-hf: 448 px tiles, up to 12 + a thumbnail, 256 tokens each
        import families_tiny_e as E
        from vlmtune.models.families.internvl import internvl_processor_class

        model, tiny = E.internvl()
        images = tf.GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, min_patches=1, max_patches=12)
        proc = internvl_processor_class()(images, tiny.tokenizer, image_seq_length=256, chat_template=tiny.chat_template)
        return _rebuilt(model, **{"vision_config.image_size": [448, 448], "image_seq_length": 256}), proc
    raise KeyError(family)


def preset(family: str):
    return load_config(ROOT / "configs" / PRESETS[family])


def test_every_family_has_a_preset_for_its_checkpoint():
    assert set(PRESETS) == set(REGISTRY)
    for family, name in PRESETS.items():
        cfg = preset(family)
        assert cfg.model.max_image_tokens is not None, name
        folder = DATA / cfg.model.name.replace("/", "__")
        if folder.is_dir():  # the preset's checkpoint is served by this family's row
            assert family_for(json.loads((folder / "config.json").read_text())["model_type"]).name == family, name


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_phone_photo_within_preset_budget_same_count_in_training_and_generation(family, photo):
    model, processor = real(family)
    spec, cfg = REGISTRY[family], preset(family)
    encoder = PromptAnswerTokenizer(processor, spec, cfg.data.max_length)
    before = image_tokens_in(processor, encoder.encode_prompts([photo], [PROMPT])["input_ids"][0])

    info = limit_image_tokens(spec, processor, model.config, cfg.model.max_image_tokens)
    example = encoder.encode(photo, PROMPT, ANSWER)  # refuses a sample longer than the preset's max_length
    train_count = image_tokens_in(processor, example["input_ids"])
    generation = encoder.encode_prompts([photo], [PROMPT])
    assert (before, train_count) == PHOTO_TOKENS[family]
    assert train_count <= info["image_tokens"] <= cfg.model.max_image_tokens
    assert image_tokens_in(processor, generation["input_ids"][0]) == train_count
    if "image_grid_thw" in example:  # Qwen: one token per 2x2 merged patches
        assert train_count == int(example["image_grid_thw"].prod()) // 4


# Shapes that reach each layout's worst case: square (Idefics3 k x k tiles), 2:1 and 1:2 (the
# LLaVA-NeXT 1x2 / 2x1 grids), a multiple of 28 px (Qwen's exact max_pixels), extreme aspects.
SHAPES = [(896, 896), (1092, 1092), (1344, 672), (672, 1344), (672, 336), (4000, 1000), (1000, 4000), (300, 200)]


@pytest.mark.parametrize("family,budget,setting,worst", [
    ("qwen2_vl", 1024, ("max_pixels", 1024 * 28 * 28), 1024),
    ("qwen3_vl", 1024, ("max_pixels", 1024 * 32 * 32), 1024),
    # grids 1x1, 1x2, 2x1 fit; the 1:2 portrait (672x1344) fills the 2x1 grid: 729 + 54 x 27 + 54 newlines
    ("llava_onevision", 2300, ("image_grid_pinpoints", [[384, 384], [384, 768], [768, 384]]), 2241),
    ("internvl", 1000, ("max_patches", 2), 770),  # 2 tiles + thumbnail (the 2:1 pictures), 3 x 256 + 2
    ("llava_next", 1776, ("image_grid_pinpoints", [[336, 672], [672, 336]]), 1776),
    ("llava_next", 1500, ("image_grid_pinpoints", [[336, 336]]), 1176),  # nothing fits: one tile + base view
    ("idefics3", 1690, ("longest_edge", 1092), 1690),
    ("idefics3", 1000, ("longest_edge", 728), 845),  # 2x2 tiles + global; 3x3 + 1 = 1690 does not fit
    ("smolvlm", 400, ("longest_edge", 1024), 320),
    ("idefics2", 319, ("do_image_splitting", False), 64),
    ("mistral3", 1056, ("longest_edge", 896), 1056),  # 896x896: 32x32 [IMG] + 32 row ends
    ("mistral3", 1000, ("longest_edge", 868), 992),  # 31 x 32 = 992 fits, 32 x 33 does not
    ("lfm2_vl", 1024, ("max_tiles", 3), 1024),  # 4000x1000: 3x1 tiles + a 1024x256 thumbnail of 256
    ("lfm2_vl", 700, ("do_image_splitting", False), 256),  # 2 tiles + thumbnail = 768 > 700: one view
    ("lfm2_vl", 100, ("max_image_tokens", 100), 100),
    # the default squashes every picture to a square: 36 -> 168 px (12x12 patches, 6x6 after the shuffle);
    # 20 -> 4x4 = 16 tokens at 112 px (5x5 = 25 would pass the budget)
    ("aya_vision", 36, ("size", "168x168"), 36),
    ("aya_vision", 20, ("size", "112x112"), 16),
    ("aya_vision", 1000, ("size", "224x224"), 64),  # never raised above the checkpoint's 224 px
])
def test_budget_bounds_every_aspect_ratio(family, budget, setting, worst):
    from PIL import Image

    model, processor = real(family)
    spec = REGISTRY[family]
    info = limit_image_tokens(spec, processor, model.config, budget)
    assert info[setting[0]] == setting[1]
    encoder = PromptAnswerTokenizer(processor, spec, 8192)
    counts = [image_tokens_in(processor, encoder.encode_prompts([Image.new("RGB", s, (90, 20, 200))], [PROMPT])["input_ids"][0])
              for s in SHAPES]
    assert max(counts) == info["image_tokens"] == worst  # the bound is reached, never passed
    if family in ("llava_next", "llava_onevision"):  # the model tiles with the same grids the processor counted
        assert model.config.image_grid_pinpoints == setting[1]


@pytest.mark.parametrize("family,budget,message", [
    ("llava", 500, "fixed 576 image tokens"),
    ("paligemma", 255, "fixed 256 image tokens"),
    ("llava_next", 1175, "at least 1176 image tokens"),
    ("qwen2_vl", 3, "at least 4 image tokens"),
    ("qwen3_vl", 63, "at least 64 image tokens"),  # min_pixels 65536 = 64 tokens of 32x32 px
    ("llava_onevision", 1484, "at least 1485 image tokens"),  # base view + one 384 px tile
    ("internvl", 257, "at least 258 image tokens"),  # one tile of 256 + <img></img>
    ("idefics2", 63, "at least 64 image tokens"),
    ("idefics3", 168, "at least 169 image tokens"),
    ("mistral3", 1, "at least 2 image tokens"),
    ("lfm2_vl", 0, "at least 1 image token"),
])
def test_budget_below_what_the_family_can_do_is_refused(family, budget, message):
    model, processor = real(family)
    with pytest.raises(VlmtuneError, match=message):
        limit_image_tokens(REGISTRY[family], processor, model.config, budget)


@pytest.mark.parametrize("overrides,message", [
    (["model.max_image_tokens=0"], "model.max_image_tokens=0 is invalid: must be >= 1"),
    (["model.max_image_tokens=512"], "must be below data.max_length=512"),
])
def test_config_refuses_a_budget_that_cannot_fit(overrides, message):
    with pytest.raises(VlmtuneError, match=message):
        load_config(overrides=overrides)


def test_unset_budget_keeps_the_checkpoint_settings(photo):
    model, processor = real("qwen2_vl")
    assert limit_image_tokens(REGISTRY["qwen2_vl"], processor, model.config, None) is None
    assert processor.image_processor.size["longest_edge"] == 12845056


@pytest.mark.parametrize("family,budget,key,saved", [
    ("qwen2_vl", 256, "size", {"longest_edge": 256 * 28 * 28, "shortest_edge": 3136}),
    ("llava_next", 1776, "image_grid_pinpoints", [[336, 672], [672, 336]]),
    ("idefics2", 100, "do_image_splitting", False),
    ("idefics3", 1690, "size", {"longest_edge": 1092}),
    ("smolvlm", 640, "size", {"longest_edge": 1536}),
    ("qwen3_vl", 256, "size", {"longest_edge": 256 * 32 * 32, "shortest_edge": 65536}),
    ("llava_onevision", 2300, "image_grid_pinpoints", [[384, 384], [384, 768], [768, 384]]),
    ("internvl", 1000, "max_patches", 2),
    ("mistral3", 1056, "size", {"longest_edge": 896}),
    ("lfm2_vl", 1024, "max_tiles", 3),
    ("aya_vision", 36, "size", {"height": 168, "width": 168}),
])
def test_limit_is_written_into_the_saved_processor(family, budget, key, saved, photo, tmp_path):
    """What train saves into the adapter dir (and merge reloads) keeps the limited setting."""
    model, processor = real(family)
    spec = REGISTRY[family]
    limit_image_tokens(spec, processor, model.config, budget)
    count = image_tokens_in(processor, PromptAnswerTokenizer(processor, spec).encode_prompts([photo], [PROMPT])["input_ids"][0])
    assert count <= budget
    processor.save_pretrained(tmp_path)
    assert saved_image_settings(tmp_path)[key] == saved
    reloaded = spec.hooks.load_processor(str(tmp_path))
    again = PromptAnswerTokenizer(reloaded, spec).encode_prompts([photo], [PROMPT])["input_ids"][0]
    assert image_tokens_in(reloaded, again) == count


def saved_image_settings(folder: Path) -> dict:
    """The image processor's saved settings: nested in processor_config.json (transformers 5), else their own file."""
    nested = json.loads((folder / "processor_config.json").read_text()).get("image_processor")
    return nested or json.loads((folder / "preprocessor_config.json").read_text())


def test_sequence_stats_counts_image_tokens_and_lengths():
    _, processor = A.llava15()
    image = processor.image_token_id
    examples = [{"input_ids": [1, image, image, 5, 6]}, {"input_ids": [1, image, 5]}]
    assert sequence_stats(processor, examples) == {"rows": 2, "image_tokens_min": 1, "image_tokens_max": 2, "longest": 5}


# ---------------------------------------------------------------- a 12 MP photo trains at the preset
# Ten sub-images (Idefics3, SmolVLM) or 4096 patches (Gemma 3) through the vision tower: 11-16 s each
# on 2 shared cores. The processor side of every family stays in the fast tests above.
SLOW = {"idefics3", "smolvlm", "gemma3"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in sorted(PRESETS)])
def test_phone_photo_trains_one_step_at_preset(family, photo, tmp_path):
    from vlmtune.training.fit import fit

    model, processor = real(family)
    spec, cfg = REGISTRY[family], preset(family)
    limit_image_tokens(spec, processor, model.config, cfg.model.max_image_tokens)
    encoder = PromptAnswerTokenizer(processor, spec, cfg.data.max_length)
    example = encoder.encode(photo, PROMPT, ANSWER)
    run = A.run_config(tmp_path, "train.max_steps=1", "train.batch_size=1", "train.lora.targets=lm+projector")
    result = fit(model, spec, torch.float32, [example], None, run, str(tmp_path), processor.tokenizer.pad_token_id)
    assert np.isfinite(result.log_history[-1]["train_loss"])
    inputs = encoder.encode_prompts([photo], [PROMPT])  # generation: the model accepts the same image tokens
    with torch.no_grad():
        out = result.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1


# ---------------------------------------------------------------- the budget travels with the run
def caption_photos(folder: Path, n: int = 3) -> Path:
    import csv

    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        size = PHOTO if i % 2 == 0 else PHOTO[::-1]  # portrait and landscape, as phones write them
        jpeg_photo(folder / f"IMG_{i}.jpg", size)
        rows.append({"file_name": f"IMG_{i}.jpg", "caption": A.ANSWERS[i % 4], "split": "test" if i == 0 else "train"})
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "caption", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.mark.parametrize("family,budget,count,printed", [
    ("qwen2_vl", 256, 234, "234"),  # max_pixels 256 * 784: 4032x3024 -> 504x364 px = 18 x 13 tokens, portrait alike
    # 1x2 grid unpadded to 32 of 48 feature columns: 576 + 24 * 32 + 24 newlines; portrait 2x1: 576 + 32 * 24 + 32
    pytest.param("llava_next", 1776, 1368, "1368-1376", marks=pytest.mark.slow),
])
def test_train_run_and_inference_use_the_same_image_tokens(family, budget, count, printed, photo, tmp_path, capsys):
    from vlmtune.models.loading import load_for_inference
    from vlmtune.stages.merge import merge
    from vlmtune.stages.train import train_run

    model, processor = real(family)
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    run = tmp_path / "run"
    train_run(load_config(overrides=[
        f"model.name={tmp_path / 'base'}", f"model.max_image_tokens={budget}", f"data.path={caption_photos(tmp_path / 'data')}",
        f"output_dir={run}", "data.max_length=2048", "train.max_steps=1", "train.batch_size=1", "train.bf16=false",
        "train.save_steps=-1", "train.eval_each_epoch=false", "eval.before=false", "eval.max_new_tokens=1"]))
    out = capsys.readouterr().out
    assert f"train: {printed} image tokens per picture" in out  # printed before any work
    assert f"model.max_image_tokens={budget}" in out

    tuned, reloaded, spec = load_for_inference(run, dtype="fp32", device=torch.device("cpu"))
    ids = PromptAnswerTokenizer(reloaded, spec).encode_prompts([photo], [PROMPT])
    assert image_tokens_in(reloaded, ids["input_ids"][0]) == count
    saved = spec.hooks.load_processor(str(run / "adapter"))  # what merge reloads
    assert image_tokens_in(saved, PromptAnswerTokenizer(saved, spec).encode_prompts([photo], [PROMPT])["input_ids"][0]) == count
    if family == "llava_next":
        assert tuned.get_base_model().config.image_grid_pinpoints == [[336, 672], [672, 336]]
    with torch.no_grad():
        tuned.generate(**ids, max_new_tokens=1, do_sample=False)

    merged_dir = merge(run, tmp_path / "merged")  # a standalone model: plain transformers reads the limit back
    merged, from_merge, _ = load_for_inference(merged_dir, dtype="fp32", device=torch.device("cpu"))
    ids = PromptAnswerTokenizer(from_merge, spec).encode_prompts([photo], [PROMPT])
    assert image_tokens_in(from_merge, ids["input_ids"][0]) == count
    with torch.no_grad():  # LLaVA-NeXT: the merged config.json tiles with the same grids
        merged.generate(**ids, max_new_tokens=1, do_sample=False)


# ---------------------------------------------------------------- the embedded default's resolution knob
def test_default_below_its_224_px_trains_and_generates_the_counted_tokens(photo, tmp_path):
    """36 tokens: 168 px in, 12x12 DINOv2 patches (position embeddings interpolated), 6x6 after the
    2x2 shuffle; the model's own check (features == placeholders) passes in training and generation."""
    from vlmtune.training.fit import fit

    model, processor = real("aya_vision")
    spec = REGISTRY["aya_vision"]
    info = limit_image_tokens(spec, processor, model.config, 36)
    encoder = PromptAnswerTokenizer(processor, spec, 256)
    example = encoder.encode(photo, PROMPT, ANSWER)
    assert (info["image_tokens"], image_tokens_in(processor, example["input_ids"])) == (36, 36)
    assert tuple(example["pixel_values"].shape[-2:]) == (168, 168)
    run = A.run_config(tmp_path, "train.max_steps=1", "train.batch_size=1", "train.lora.targets=lm+projector")
    result = fit(model, spec, torch.float32, [example], None, run, str(tmp_path), processor.tokenizer.pad_token_id)
    assert np.isfinite(result.log_history[-1]["train_loss"])
    inputs = encoder.encode_prompts([photo], [PROMPT])
    with torch.no_grad():
        out = result.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1


def test_aya_tiling_processor_budget_is_refused_in_one_line():
    import families_tiny_d as D

    model, processor = D.aya_vision()
    with pytest.raises(VlmtuneError, match="AyaVisionProcessor tiles pictures and has no single resolution"):
        limit_image_tokens(REGISTRY["aya_vision"], processor, model.config, 100)
