"""Tiny random IDEFICS, Idefics2, Idefics3, SmolVLM and Mllama models with their real processor classes.

Each builder returns (model, processor) from configs a few layers deep (hidden 32) and a
hand-made word-level tokenizer whose vocabulary is the family's special tokens + ``WORDS``, so a
test can spell the expected token ids out by hand. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "an", "and", "white", "black", "rook", "knight", "bishop", "queen", "king", "pawn", "describe",
         "what", "is", "this", "picture", "in", "few", "words", "user", "assistant", ".", ",", "?", ":"]
HIDDEN = 32
GRID_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]  # Idefics3/SmolVLM sub-image tags


def word_tokenizer(specials: list[str], bos: str, eos: str, pad: str, tail: list[str] = (), adds_bos: bool = True):
    """Lower-cased, whitespace-split tokenizer: [UNK], specials, WORDS, then ``tail`` (ids at the end).

    ``adds_bos``: like the real Llama/Mistral/Llama-3 tokenizers, tokenizing puts BOS first (unless
    add_special_tokens=False), so a test sees a doubled BOS where a row would produce one.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", *specials, *WORDS, *tail])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=pad, bos_token=bos, eos_token=eos)
    extra = [t for t in [*specials, *tail] if t not in (bos, eos, pad)]
    fast.add_special_tokens({"additional_special_tokens": extra})
    return fast


def _text(vocab_size: int, **kw) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, **kw)


def _vision(image_size: int, patch_size: int, **kw) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=image_size, patch_size=patch_size, **kw)


def _special_ids(tok) -> dict:
    return {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


# ---------------------------------------------------------------- IDEFICS (v1)
IDEFICS_IMAGE = 28  # patch 14: 2x2 patches + CLS; the perceiver resamples them to 4 latents


def idefics(seed: int = 0):
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    # As in the real tokenizer, the two image tokens are the "additional vocabulary" past vocab_size.
    tok = word_tokenizer(["<pad>", "<s>", "</s>", "<end_of_utterance>"], "<s>", "</s>", "<pad>",
                         tail=["<fake_token_around_image>", "<image>"])
    torch.manual_seed(seed)
    config = IdeficsConfig(
        vocab_size=len(tok) - 2, additional_vocab_size=2, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=2, cross_layer_interval=1, use_resampler=True,
        alpha_initializer="ones",  # trained checkpoints have open gates; zeros would cut the image off
        vision_config=dict(embed_dim=HIDDEN, image_size=IDEFICS_IMAGE, patch_size=14, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=2 * HIDDEN),
        perceiver_config=dict(resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=8),
        **_special_ids(tok))
    model = IdeficsForVisionText2Text(config).eval()
    processor = IdeficsProcessor(IdeficsImageProcessor(image_size=IDEFICS_IMAGE), tok)
    return model, processor


# ---------------------------------------------------------------- Idefics2 / Idefics3 / SmolVLM
IDEFICS2_LATENTS = 4  # image tokens per sub-image (perceiver latents)
IDEFICS3_TILE = 32  # patch 8 -> 4x4 patches, pixel shuffle x2 -> 4 image tokens per sub-image
IDEFICS3_SEQ = (IDEFICS3_TILE // 8) ** 2 // 4


def idefics2(seed: int = 0):
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor, Idefics2Processor

    tok = word_tokenizer(["<pad>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"],
                         "<s>", "</s>", "<pad>")
    torch.manual_seed(seed)
    config = Idefics2Config(
        text_config=dict(model_type="mistral", **_text(len(tok), **_special_ids(tok))),
        vision_config=_vision(56, 14),
        perceiver_config=dict(hidden_size=HIDDEN, resampler_n_latents=IDEFICS2_LATENTS, resampler_depth=1,
                              resampler_n_heads=2, resampler_head_dim=8, num_key_value_heads=1),
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    model = Idefics2ForConditionalGeneration(config).eval()
    # Splitting = 4 crops + the whole picture; sizes vary with the aspect ratio (zero-padded per batch).
    images = Idefics2ImageProcessor(do_image_splitting=True, size={"shortest_edge": 28, "longest_edge": 56})
    return model, Idefics2Processor(images, tok, image_seq_len=IDEFICS2_LATENTS)


def _idefics3_like(config_cls, model_cls, bos: str, eos: str, seed: int, adds_bos: bool = True):
    tok = word_tokenizer(["<pad>", bos, eos, "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                          "<global-img>", *GRID_TOKENS], bos, eos, "<pad>", adds_bos=adds_bos)
    torch.manual_seed(seed)
    config = config_cls(
        text_config=dict(model_type="llama", **_text(len(tok), **_special_ids(tok))),
        vision_config=_vision(IDEFICS3_TILE, 8), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    return model_cls(config).eval(), tok


def _splitting(image_processor_cls):
    # Longest edge 64 -> up to 2x2 tiles of 32 + the whole picture: the sub-image count depends on the aspect ratio.
    return image_processor_cls(do_image_splitting=True, size={"longest_edge": 2 * IDEFICS3_TILE},
                               max_image_size={"longest_edge": IDEFICS3_TILE})


def idefics3(seed: int = 0):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    model, tok = _idefics3_like(Idefics3Config, Idefics3ForConditionalGeneration, "<|begin_of_text|>",
                                "<|end_of_text|>", seed)
    return model, Idefics3Processor(_splitting(Idefics3ImageProcessor), tok, image_seq_len=IDEFICS3_SEQ)


def smolvlm(seed: int = 0):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor

    from vlmtune.models.families.idefics import smolvlm_processor_class

    model, tok = _idefics3_like(SmolVLMConfig, SmolVLMForConditionalGeneration, "<|im_start|>", "<|im_end|>", seed,
                                adds_bos=False)  # SmolLM2's tokenizer adds no BOS
    # The stock class less its video slot, as the smolvlm row loads it (the video half needs torchvision).
    processor = smolvlm_processor_class()(_splitting(SmolVLMImageProcessor), tok, image_seq_len=IDEFICS3_SEQ)
    return model, processor


# ---------------------------------------------------------------- Mllama
MLLAMA_TILE = 28  # patch 14 -> 4 patches + CLS per tile
MLLAMA_TILES = 2


def mllama(seed: int = 0):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor

    from vlmtune.models.families.mllama import mllama_processor_class

    specials = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]
    # <|image|> sits right past the LM head's vocabulary, as in the real checkpoints (id 128256).
    tok = word_tokenizer(specials, "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                         tail=["<|image|>"])
    torch.manual_seed(seed)
    text = _text(len(tok) - 1, **_special_ids(tok))
    text.update(num_hidden_layers=3, cross_attention_layers=[1])
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_global_layers=1,
                  attention_heads=2, image_size=MLLAMA_TILE, patch_size=14, max_num_tiles=MLLAMA_TILES,
                  vision_output_dim=2 * HIDDEN, intermediate_layers_indices=[0],
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    config = MllamaConfig(text_config=text, vision_config=vision,
                          image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    model = MllamaForConditionalGeneration(config).eval()
    with torch.no_grad():  # trained checkpoints have open gates; the zero init would cut the image off
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.fill_(1.0)
    images = MllamaImageProcessor(size={"height": MLLAMA_TILE, "width": MLLAMA_TILE}, max_image_tiles=MLLAMA_TILES)
    return model, mllama_processor_class()(images, tok)


# registry row -> builder: (seed) -> (model, processor)
FAMILIES = {"idefics": idefics, "idefics2": idefics2, "idefics3": idefics3, "smolvlm": smolvlm, "mllama": mllama}


def save(name: str, path: Path, seed: int = 0) -> Path:
    model, processor = FAMILIES[name](seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ---------------------------------------------------------------- checks shared by the family test files
PROMPT = "Describe this picture."


def picture(size=(40, 30), colour=(200, 30, 30)):
    from PIL import Image

    return Image.new("RGB", size, colour)


def ids(processor, tokens: list[str]) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(tokens)


def train_config(tmp_path, *extra):
    from vlmtune.config import load_config

    return load_config(overrides=[f"output_dir={tmp_path}", "train.max_steps=2", "train.lr=1e-2", "train.batch_size=2",
                                  "train.logging_steps=1", "train.save_steps=-1", "train.eval_each_epoch=false",
                                  "train.bf16=false", "train.warmup_ratio=0", "train.scheduler=constant", *extra])


def training_examples(encoder) -> list[dict]:
    """Two pictures of different aspect ratios (different sub-image counts / sizes) and answer lengths."""
    return [encoder.encode(picture((40, 30), (250, 250, 250)), PROMPT, "a white rook"),
            encoder.encode(picture((30, 60), (10, 10, 10)), "What is this?", "a black knight and a white pawn")]


def original_name(peft_name: str) -> str:
    name = peft_name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


def moved_parameters(spec, model, processor, tmp_path, targets: str) -> dict[str, list[str]]:
    """Two LoRA steps with gradient checkpointing; parameter names grouped by what happened to them.

    "frozen_moved": frozen weights that changed (must be none); "lora_b_zero": LoRA B matrices still
    all zero, i.e. that never got a gradient (B starts at zero); "whole_still": whole-trained
    (projector) weights that did not change; "lora_b": every LoRA B matrix.
    """
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.training.fit import fit

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = train_config(tmp_path, f"train.lora.targets={targets}", "train.gradient_checkpointing=true")
    result = fit(model, spec, torch.float32, training_examples(PromptAnswerTokenizer(processor, spec, 256)), None, cfg, str(tmp_path),
                 processor.tokenizer.pad_token_id)
    after = {n: p.detach() for n, p in result.model.named_parameters()}
    plain = [n for n in after if "lora_" not in n and "modules_to_save" not in n]
    assert result.model.get_base_model().is_gradient_checkpointing
    return {
        "frozen_moved": [n for n in plain if not torch.equal(after[n], before[original_name(n)])],
        "lora_b": [n for n in after if "lora_B" in n],
        "lora_b_zero": [n for n in after if "lora_B" in n and after[n].abs().sum() == 0],
        "whole_still": [n for n in after if "modules_to_save" in n and torch.equal(after[n], before[original_name(n)])],
        "whole": [n for n in after if "modules_to_save" in n],
    }


def answer_logits(model, batch: dict) -> list[torch.Tensor]:
    """Logits at each sample's supervised positions (what the loss sees)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits
    keep = torch.nn.functional.pad(batch["labels"][:, 1:] != -100, (0, 1), value=False)
    return [logits[i][keep[i]] for i in range(len(logits))]


def next_token_logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def perturb_trainable(model, seed: int = 1) -> None:
    """Make an adapter non-trivial (LoRA B starts at zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)


def training_view_of_generation(model, processor, spec, bad_tokens: list[str], steps: int = 4):
    """(logits greedy generation saw, logits of the training forward over prompt + generated answer).

    The training encoding of an answer must show the model what generation showed it: the same
    prompt ids and, for cross-attention families, the same picture mask over the answer.
    ``bad_tokens`` are kept out of the answer (image tokens would need pictures of their own).
    """
    from vlmtune.training.collate import Collator
    from vlmtune.models.prompting import PromptAnswerTokenizer

    encoder, tok = PromptAnswerTokenizer(processor, spec, 512), processor.tokenizer
    inputs = encoder.encode_prompts([picture()], [PROMPT])
    # EOS is suppressed too, so that the answer has all its steps.
    bad = ids(processor, [tok.unk_token, tok.eos_token, *bad_tokens])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, suppress_tokens=bad,
                             output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    answer = tok.decode(generated).strip()
    example = encoder.encode(picture(), PROMPT, answer)
    start = len(example["input_ids"]) - len(encoder.answer_ids(answer))
    assert example["input_ids"][start:start + steps] == generated  # the answer re-tokenizes to the same ids
    batch = Collator(tok.pad_token_id, spec.seq_keys)([example])
    batch.pop("labels")
    with torch.no_grad():
        trained = model(**batch).logits[0, start - 1:start - 1 + steps]
    return torch.cat(out.logits), trained


def train_run_on(name: str, tmp_path: Path) -> Path:
    """``vlmtune train model.name=<tiny checkpoint> data.path=<caption folder>``, in process; returns the run dir."""
    import tiny as llava_tiny  # tests/tiny.py: the caption folder
    from vlmtune.config import load_config
    from vlmtune.stages.train import train_run

    model_dir = save(name, tmp_path / "model")
    data = llava_tiny.caption_folder(tmp_path / "data", n=4)  # 3 train rows, 1 test row
    run = tmp_path / "run"
    train_run(load_config(overrides=[f"model.name={model_dir}", f"data.path={data}", f"output_dir={run}",
                                     "train.max_steps=1", "train.batch_size=2", "train.bf16=false",
                                     "train.save_steps=-1", "train.eval_each_epoch=false", "eval.before=false",
                                     "eval.max_new_tokens=2"]))
    return run
