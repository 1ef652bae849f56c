"""LLaVA-style families: a vision tower, a projector, and image tokens spliced into the LM input."""

from vlmtune.models.family import FamilySpec

# CLIP (llava-1.5) names its projections q/k/v/out_proj + fc1/fc2; DINOv2 (the embedded default)
# uses q/k/v/o_proj + fc1/fc2. Scoped to the vision tower by prefix, so no LM module can match.
CLIP_LIKE_VISION = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "fc1", "fc2")

LLAVA = FamilySpec(
    name="llava",
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    vision_leaves=CLIP_LIKE_VISION,
    feature_cache=True,
    notes="LLaVA-1.5 and the embedded default (DINOv2 + SmolLM2)",
)
