"""One typed config tree: YAML file + dotted command-line overrides, validated with one-line errors.

OmegaConf (as in torchtune) does the merging and type coercion against these dataclasses; this
module adds the value checks and turns every failure into a ``VlmtuneError`` naming the key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from vlmtune.errors import VlmtuneError

# The question asked of every picture when the data brings none (data.prompt).
DEFAULT_PROMPT = "Describe this picture in a few words."
# Train rows asking DEFAULT_PROMPT get one of these (data.prompts), so the tuned model does not learn
# one wording only; HELDOUT_PROMPT is none of them: the report scores the test split under it too.
DEFAULT_PROMPTS = (DEFAULT_PROMPT, "Describe this image briefly.", "In a few words, what does this picture show?",
                   "Give a short description of this image.")
HELDOUT_PROMPT = "What do you see in this picture?"
LORA_TARGETS = ("lm", "lm+vision", "lm+vision+projector", "lm+projector", "projector", "full")
DTYPES = ("auto", "bf16", "fp32", "fp16")
# train.report_to value -> (module the Trainer's callback imports, vlmtune extra that installs it).
TRACKERS = {"trackio": ("trackio", "trackio"), "tensorboard": ("tensorboard", "tensorboard"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
# transformers' OptimizerNames values (5.24): the config layer imports no transformers (a test keeps them in step).
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
              "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
              "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
              "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit",
              "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit",
              "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise",
              "lomo", "adalomo", "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd",
              "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw")


def doc(text: str, default: Any = None, factory: Any = None):
    """A dataclass field whose help text travels with it (printed by ``vlmtune config``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class ModelConfig:
    name: str = doc("Model directory or hub id; 'default' = the embedded DINOv2 + SmolLM2 model.", "default")
    family: str | None = doc("Registry family; normally read from config.model_type ('vlmtune families' lists them). "
                             "'generic' reads the module tree off the model itself (what a model_type without a "
                             "row gets).", None)
    dtype: str = doc("Weights dtype: auto (bf16 on a bf16 GPU, and for training under train.bf16 on a bf16 CPU; else fp32), bf16, fp32; fp16 only for inference.", "auto")
    attn_implementation: str = doc("Attention kernel: auto (flash_attention_2 on CUDA when installed, else sdpa; eager while "
                                   "training on a CPU, where SDPA's flash backward is slow), "
                                   "sdpa, eager or flash_attention_2.", "auto")
    quantization: str = doc("QLoRA base weights: none, 4bit (NF4) or 8bit; needs CUDA and bitsandbytes.", "none")
    max_image_tokens: int | None = doc(
        "Most image tokens one picture may get (a 12 MP photo at Qwen2-VL's own settings gets 15,552), mapped onto "
        "the family's processor: Qwen max_pixels, LLaVA-NeXT grid pinpoints, Idefics2 image splitting, the embedded "
        "default's square side (64 = 224 px, 36 = 168 px, 16 = 112 px), "
        "Idefics3/SmolVLM longest_edge; families with a fixed count (LLaVA-1.5, PaliGemma, Gemma 3, Mllama, IDEFICS) are "
        "only checked. Kept with the run for evaluation, chat and merge. None: the checkpoint's own settings.", None)
    device_map: str | None = doc(
        "None: the whole model on this process's device. auto: one process spreads the layers over every visible GPU "
        "(accelerate's device_map='auto'), for a model no single GPU holds; only one GPU computes at a time, so it is "
        "slower than FSDP/DeepSpeed (README 'Several GPUs'). Not with several processes.", None)


@dataclass
class AugmentConfig:
    views: int | None = doc("Versions of each train picture: the picture itself and views - 1 augmented ones (each a "
                            "fixed function of train.seed, the picture and the view, so the feature cache computes "
                            "them once); epoch e shows picture i its view (e + i) mod views. 1: off. None: 4 when "
                            "the run trains at least 10 epochs, else off (augmentation regularises many passes over "
                            "few pictures and cost a 3-epoch run: bench/README.md, small-data recipe).", None)
    photometric: bool = doc("Exposure, contrast, saturation, colour temperature; sometimes blur and JPEG "
                            "re-encoding. Nothing a caption says changes.", True)
    scale_jitter: float = doc("Shrink the picture by up to this share onto a canvas of its border colour, shifted: "
                              "every object stays in frame (a zoom-in could cut one off). 0: off.", 0.1)
    flip: bool = doc("Mirror half the views. Off: captions may say left and right (chess reads left to right).", False)
    rotate: float = doc("Rotate by up to this many degrees, corners kept. Off: a caption may say upright.", 0.0)


@dataclass
class DataConfig:
    path: str | None = doc("Caption folder (captions.csv + images), metadata.jsonl/imagefolder, a dataset saved by "
                           "'vlmtune data build', or a hub dataset name.", None)
    image_column: str | None = doc("Column holding the picture (default: file_name / image).", None)
    caption_column: str | None = doc("Column holding the answer (default: caption / text / answer).", None)
    prompt_column: str | None = doc("Optional per-row question column (VQA-style data).", None)
    prompt: str = doc("Question asked for every picture when the data has no prompt column.", DEFAULT_PROMPT)
    prompts: list[str] | None = doc(
        "Wordings of data.prompt spread over the train rows that ask it (one per picture, by a hash of its bytes: a "
        "rerun gets the same); validation and test keep data.prompt. Must include data.prompt; [] = data.prompt "
        f"alone. None: {list(DEFAULT_PROMPTS)} when data.prompt is the default, else data.prompt alone.", None)
    heldout_prompt: str | None = doc(
        "A wording trained on by no row: the report also scores the test split, before and after, with it in "
        "place of every prompt (prompt robustness). None or empty: off.", HELDOUT_PROMPT)
    heldout_domain: str | None = doc(
        "A second test set from a domain not trained on (your real photos while training on renders; the demo's "
        "renders of another mesh set and colours): a caption folder or dataset, every row of it scored before and "
        "after, beside the test split. None: off.", None)
    test_ratio: float = doc("Share of rows put in the test split when the data has no split.", 0.2)
    validation_ratio: float = doc("Share of train pictures held out for eval loss and early stopping when the data has "
                                  "no validation split (chosen by a hash of each picture's bytes, at least 1 picture; "
                                  "recorded in data.json); 0: none. Only carved when train.eval_each_epoch or "
                                  "train.early_stopping_patience asks for it.", 0.1)
    label_column: str | None = doc("Structured label column scored as a multiset (e.g. chess 'pieces').", None)
    label_parser: str | None = doc("How to read labels out of generated text: a registered parser ('chess') or None.", None)
    max_length: int = doc("Token budget per sample; a sample that would cut image tokens or its answer is refused.", 512)
    augment: AugmentConfig = doc("Augmentations of train pictures that keep their captions true (data/augment.py).",
                                 factory=AugmentConfig)


@dataclass
class LoraConfig:
    targets: str = doc(f"What trains: one of {', '.join(LORA_TARGETS)}.", "lm+projector")
    r: int = doc("LoRA rank.", 16)
    alpha: int = doc("LoRA alpha (scaling = alpha / r).", 32)
    dropout: float = doc("LoRA dropout (0 saves ~30 % of a CPU step: PEFT's dropout copies every LoRA input; the "
                         "small-data sweep's recipe has 0).", 0.0)


@dataclass
class TrainConfig:
    epochs: float | None = doc("Training epochs; null: chosen from the number of train pictures so that training "
                               "takes about train.step_budget optimizer steps, 3 to 30 epochs (printed; "
                               "training/schedule.py; fitted by the sweep in bench/README.md, small-data recipe).", None)
    step_budget: int = doc("Optimizer steps to aim at with train.epochs=null (within 3 to 30 epochs).", 150)
    max_steps: int = doc("Stop after this many optimizer steps (-1: use epochs).", -1)
    lr: float = doc("Peak learning rate for LoRA weights.", 3e-4)
    projector_lr: float | None = doc("Learning rate for whole-trained modules (projector); None = lr.", None)
    batch_size: int = doc("Per-device batch size.", 4)
    grad_accum: int = doc("Gradient accumulation steps.", 1)
    warmup_ratio: float = doc("Share of steps spent warming up the learning rate.", 0.05)
    scheduler: str = doc("Learning-rate schedule (transformers name: cosine, linear, constant...).", "cosine")
    weight_decay: float = doc("Weight decay (never on biases and norm weights).", 0.0)
    optim: str = doc("Optimizer, by transformers' name: adamw_torch_fused, adamw_torch, adafactor, sgd, "
                     "paged_adamw_8bit (bitsandbytes, CUDA)...", "adamw_torch_fused")
    adam_beta1: float = doc("Adam beta1 (first-moment decay).", 0.9)
    adam_beta2: float = doc("Adam beta2 (second-moment decay).", 0.999)
    adam_epsilon: float = doc("Adam epsilon.", 1e-8)
    seed: int = doc("Seed for data order and initialisation.", 0)
    bf16: str = doc("bf16 mixed precision: auto (on where supported), true or false. fp16 training is refused.", "auto")
    gradient_checkpointing: bool = doc("Trade compute for memory.", False)
    feature_cache: bool = doc("Compute frozen vision features once per image (when the family supports it).", True)
    save_steps: int = doc("Checkpoint every N steps (0: at each epoch end; -1: never).", 0)
    save_total_limit: int = doc("Keep the newest K checkpoints.", 2)
    eval_each_epoch: bool = doc("Compute eval loss on the validation split after each epoch (never on test).", True)
    early_stopping_patience: int = doc("Stop after N evaluations without eval-loss improvement (0: off).", 0)
    logging_steps: int = doc("Log the loss every N steps.", 5)
    report_to: str = doc("Experiment tracker for the loss and, after training, the before/after metrics and a table "
                         "of per-picture answers: none, trackio (local, no account), tensorboard, wandb or mlflow; "
                         "each needs its extra, e.g. pip install 'vlmtune[trackio]'.", "none")
    lora: LoraConfig = doc("LoRA settings.", factory=LoraConfig)


@dataclass
class EvalConfig:
    max_new_tokens: int = doc("Tokens generated per answer.", 32)
    batch_size: int = doc("Pictures per generation batch (left padded).", 8)
    num_beams: int = doc("Beam search width (1 = greedy).", 1)
    do_sample: bool = doc("Sample instead of greedy/beam decoding.", False)
    temperature: float = doc("Sampling temperature (with do_sample).", 1.0)
    top_p: float = doc("Nucleus sampling mass (with do_sample).", 1.0)
    repetition_penalty: float = doc("Penalty > 1 discourages repeats.", 1.0)
    before: bool = doc("Evaluate the base model before training (for the before/after report).", True)
    max_samples: int | None = doc("Evaluate at most this many test rows (None: all).", None)


@dataclass
class RunConfig:
    output_dir: str = doc("Run directory: config, versions, adapter, metrics and report go here.", "runs/latest")
    model: ModelConfig = doc("Base model.", factory=ModelConfig)
    data: DataConfig = doc("Training data.", factory=DataConfig)
    train: TrainConfig = doc("Fine-tuning.", factory=TrainConfig)
    eval: EvalConfig = doc("Generation and scoring.", factory=EvalConfig)


def _check(cond: bool, key: str, value: Any, want: str) -> None:
    if not cond:
        raise VlmtuneError(f"config: {key}={value!r} is invalid: {want}")


def validate(cfg: RunConfig) -> RunConfig:
    t, lo, d, e = cfg.train, cfg.train.lora, cfg.data, cfg.eval
    t.bf16 = str(t.bf16).lower()  # YAML/overrides turn true/false into booleans
    _check(cfg.model.dtype in DTYPES, "model.dtype", cfg.model.dtype, f"use one of {', '.join(DTYPES)}")
    _check(cfg.model.quantization in ("none", "4bit", "8bit"), "model.quantization", cfg.model.quantization,
           "use none, 4bit or 8bit")
    _check(cfg.model.attn_implementation in ("auto", "sdpa", "eager", "flash_attention_2"),
           "model.attn_implementation", cfg.model.attn_implementation, "use auto, sdpa, eager or flash_attention_2")
    _check(cfg.model.device_map in (None, "auto"), "model.device_map", cfg.model.device_map,
           "use auto (the model split over the visible GPUs) or leave it unset")
    budget = cfg.model.max_image_tokens
    _check(budget is None or budget >= 1, "model.max_image_tokens", budget, "must be >= 1 (or unset)")
    _check(budget is None or budget < cfg.data.max_length, "model.max_image_tokens", budget,
           f"must be below data.max_length={cfg.data.max_length}, which also holds the prompt and the answer")
    _check(lo.targets in LORA_TARGETS, "train.lora.targets", lo.targets, f"use one of {', '.join(LORA_TARGETS)}")
    _check(t.bf16 in ("auto", "true", "false"), "train.bf16", t.bf16, "use auto, true or false")
    _check(t.lr > 0, "train.lr", t.lr, "must be > 0")
    _check(t.epochs is None or t.epochs > 0 or t.max_steps > 0, "train.epochs", t.epochs,
           "must be > 0 (or unset: by train.step_budget; or set train.max_steps)")
    _check(t.step_budget >= 1, "train.step_budget", t.step_budget, "must be >= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
    _check(t.grad_accum >= 1, "train.grad_accum", t.grad_accum, "must be >= 1")
    _check(0 <= t.warmup_ratio < 1, "train.warmup_ratio", t.warmup_ratio, "must be in [0, 1)")
    _check(t.optim in OPTIMIZERS, "train.optim", t.optim, "use one of transformers' OptimizerNames, e.g. adamw_torch_fused")
    for key in ("adam_beta1", "adam_beta2"):
        _check(0 <= getattr(t, key) < 1, f"train.{key}", getattr(t, key), "must be in [0, 1)")
    _check(t.adam_epsilon > 0, "train.adam_epsilon", t.adam_epsilon, "must be > 0")
    check_tracker(t.report_to)
    _check(cfg.model.quantization == "none" or lo.targets not in ("full", "projector"), "model.quantization",
           cfg.model.quantization, f"QLoRA trains LoRA adapters on a quantized base and train.lora.targets={lo.targets} "
           "has none; use model.quantization=none or a LoRA target")
    _check(lo.r >= 1, "train.lora.r", lo.r, "must be >= 1")
    _check(0 <= lo.dropout < 1, "train.lora.dropout", lo.dropout, "must be in [0, 1)")
    _check(0 < d.test_ratio < 1, "data.test_ratio", d.test_ratio, "must be between 0 and 1")
    _check(0 <= d.validation_ratio < 1, "data.validation_ratio", d.validation_ratio, "must be in [0, 1)")
    _check(d.max_length >= 16, "data.max_length", d.max_length, "must be >= 16")
    check_prompts(d)
    _check(d.augment.views is None or d.augment.views >= 1, "data.augment.views", d.augment.views,
           "must be >= 1 (1: no augmentation; unset: by the number of epochs)")
    _check(0 <= d.augment.scale_jitter < 0.5, "data.augment.scale_jitter", d.augment.scale_jitter, "must be in [0, 0.5)")
    _check(0 <= d.augment.rotate <= 45, "data.augment.rotate", d.augment.rotate, "must be in [0, 45] degrees")
    _check(t.early_stopping_patience == 0 or t.save_steps >= 0, "train.early_stopping_patience",
           t.early_stopping_patience, "needs checkpoints to restore the best one: set train.save_steps >= 0")
    _check(e.max_new_tokens >= 1, "eval.max_new_tokens", e.max_new_tokens, "must be >= 1")
    _check(e.batch_size >= 1, "eval.batch_size", e.batch_size, "must be >= 1")
    _check(e.num_beams >= 1, "eval.num_beams", e.num_beams, "must be >= 1")
    return cfg


def training_prompts(d: DataConfig) -> list[str]:
    """The wordings train rows asking data.prompt are given (see data.prompts); first is data.prompt."""
    if d.prompts is None:
        return list(DEFAULT_PROMPTS) if d.prompt == DEFAULT_PROMPT else [d.prompt]
    return [d.prompt, *dict.fromkeys(p for p in d.prompts if p != d.prompt)]


def check_prompts(d: DataConfig) -> None:
    d.heldout_prompt = (d.heldout_prompt or "").strip() or None  # empty (or "data.heldout_prompt=") turns it off
    if d.prompts is not None:
        _check(all(p.strip() for p in d.prompts), "data.prompts", d.prompts, "every entry must be a non-empty question")
        _check(not d.prompts or d.prompt in d.prompts, "data.prompts", d.prompts,
               f"must include data.prompt={d.prompt!r}, the question validation and test are asked; "
               "add it, or use [] for data.prompt alone")
    _check(d.heldout_prompt not in training_prompts(d), "data.heldout_prompt", d.heldout_prompt,
           "train rows are asked it (data.prompt / data.prompts), so it is not held out; choose another "
           "wording or set data.heldout_prompt=null")


def check_tracker(name: str) -> None:
    """A tracker that is not installed fails here, when the config is read, not after the model has loaded."""
    _check(name == "none" or name in TRACKERS, "train.report_to", name, f"use none, {', '.join(TRACKERS)}")
    if name != "none" and importlib.util.find_spec(TRACKERS[name][0]) is None:
        raise VlmtuneError(f"config: train.report_to={name} needs the {TRACKERS[name][0]} package, which is not "
                           f"installed: pip install 'vlmtune[{TRACKERS[name][1]}]'")


def _omegaconf_error(err: Exception, source: str) -> VlmtuneError:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if "not in" in msg or "Key '" in msg and "not" in msg:
        return VlmtuneError(f"{source}: unknown config key '{key}' (see 'vlmtune config --keys')")
    return VlmtuneError(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")


def load_config(config_file: Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Defaults < ``base`` (a stage's own defaults) < YAML file < dotted overrides."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(RunConfig)
    layers = [("defaults", OmegaConf.create(base or {}))]
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise VlmtuneError(f"{path}: config file not found")
        try:
            layers.append((str(path), OmegaConf.load(path)))
        except Exception as err:  # YAML syntax errors come from yaml, not OmegaConf
            raise VlmtuneError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    for item in overrides or []:
        if "=" not in item:
            raise VlmtuneError(f"override '{item}' must look like key=value, e.g. train.lr=2e-4")
        layers.append((f"override '{item}'", OmegaConf.from_dotlist([item])))
    merged = schema
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise _omegaconf_error(err, source) from None
    return validate(OmegaConf.to_object(merged))


def to_dict(cfg: RunConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def save_config(cfg: RunConfig, path: Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every leaf: the config reference printed by the CLI."""
    rows = []
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            rows += describe(type(default), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("doc", "")))
    return rows
