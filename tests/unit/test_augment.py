"""Augmentations keep what a caption says (nothing cut, nothing moved), and every view is the same
pixels whether the feature cache precomputes it or the Trainer encodes it on the fly."""

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from vlmtune.config import AugmentConfig, load_config
from vlmtune.data.augment import _rotate, _zoom_out, active, augment, view_rng
from vlmtune.errors import VlmtuneError
from vlmtune.models.registry import LLAVA
from vlmtune.training.examples import EncodedRows, cached_rows, encode_row
from vlmtune.training.features import FEATURES, compute_features
from vlmtune.training.fit import fit

CORNERS = {(255, 0, 0): (0, 0), (0, 255, 0): (60, 0), (0, 0, 255): (0, 60), (255, 255, 0): (60, 60)}


def corner_picture() -> Image.Image:
    """64x64 grey with a 4x4 square of a distinct colour in each corner: what a zoom-in would cut."""
    a = np.full((64, 64, 3), 128, np.uint8)
    for colour, (x, y) in CORNERS.items():
        a[y:y + 4, x:x + 4] = colour
    return Image.fromarray(a)


def count_near(image: Image.Image, colour, tol: int = 40) -> int:
    a = np.asarray(image, np.int16)
    return int((np.abs(a - np.array(colour)).max(-1) < tol).sum())


@pytest.mark.parametrize("seed", range(8))
def test_zoom_out_keeps_every_corner_object_in_frame(seed):
    # scale 0.8: each 4x4 square becomes 3.2x3.2 px, so at least 2x2 px stay close to its colour
    out = _zoom_out(corner_picture(), 0.8, view_rng(seed, 0, 1))
    assert out.size == (64, 64)
    assert all(count_near(out, colour) >= 4 for colour in CORNERS)


@pytest.mark.parametrize("degrees", [-15.0, 10.0, 30.0])
def test_rotation_keeps_corners_and_size(degrees):
    out = _rotate(corner_picture(), degrees)
    assert out.size == (64, 64) and all(count_near(out, colour) >= 2 for colour in CORNERS)


def test_a_view_is_a_pure_function_of_seed_picture_and_view():
    aug, picture = AugmentConfig(), corner_picture()
    first = augment(picture, aug, view_rng(0, 3, 1))
    assert first.size == picture.size and first.mode == "RGB"
    assert first.tobytes() == augment(picture, aug, view_rng(0, 3, 1)).tobytes()
    others = [augment(picture, aug, view_rng(*key)).tobytes() for key in ((1, 3, 1), (0, 4, 1), (0, 3, 2))]
    assert first.tobytes() != picture.tobytes() and all(o != first.tobytes() for o in others)


def test_photometric_alone_moves_nothing():
    a = np.zeros((32, 32, 3), np.uint8)
    a[:, 16:] = 200  # the bright half stays on the right, whatever the exposure and white balance
    aug = AugmentConfig(scale_jitter=0.0)
    for seed in range(6):
        out = np.asarray(augment(Image.fromarray(a), aug, view_rng(seed, 0, 1)), float).mean((0, 2))
        assert out[18:].min() > out[:14].max() + 50


def test_off_means_one_view():
    assert not active(AugmentConfig(views=1))
    assert not active(AugmentConfig(views=4, photometric=False, scale_jitter=0.0))
    assert not active(AugmentConfig())  # unset views: the schedule decides (training/schedule.py)
    assert active(AugmentConfig(views=2))


@pytest.mark.parametrize("key,value,want", [("views", 0, ">= 1"), ("scale_jitter", 0.6, r"\[0, 0.5\)"),
                                            ("rotate", 90, r"\[0, 45\]")])
def test_bad_settings_name_the_key(key, value, want):
    with pytest.raises(VlmtuneError, match=rf"data.augment.{key}={value}.*{want}"):
        load_config(overrides=[f"data.augment.{key}={value}"])


def test_epoch_e_shows_picture_i_its_view_e_plus_i_mod_views(tiny_rows, tiny_encoder):
    aug = AugmentConfig(views=3)
    lazy = EncodedRows(tiny_encoder, tiny_rows, "train", aug, seed=5)
    plain = [encode_row(tiny_encoder, tiny_rows[i], "train")["pixel_values"] for i in range(len(tiny_rows))]
    for epoch in range(3):
        lazy.set_epoch(epoch)
        for i in range(len(tiny_rows)):
            got = lazy[i]["pixel_values"]
            view = (epoch + i) % 3
            assert torch.equal(got, lazy.encode(i, view)["pixel_values"])
            assert torch.equal(got, plain[i]) == (view == 0)  # view 0 is the picture itself


def test_cached_views_are_the_features_of_the_uncached_views(tiny_rows, tiny_encoder, tmp_path):
    model, _ = tiny.llava()
    lazy = EncodedRows(tiny_encoder, tiny_rows, "train", AugmentConfig(views=3), seed=1)
    cached = cached_rows(model, LLAVA, lazy, tmp_path)
    assert len(cached) == len(tiny_rows) and len(cached.store) == 3 * len(tiny_rows)
    for epoch in (0, 1, 2, 4):
        lazy.set_epoch(epoch)
        cached.set_epoch(epoch)
        want = compute_features(model, LLAVA, [lazy[i] for i in range(len(tiny_rows))])
        for i in range(len(tiny_rows)):
            assert cached[i]["input_ids"] == want[i]["input_ids"]
            assert torch.allclose(cached[i][FEATURES], want[i][FEATURES], atol=1e-6)


def test_fit_moves_the_train_split_to_each_epochs_views(tiny_rows, tiny_encoder, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(EncodedRows, "set_epoch", lambda self, e: (seen.append(e), setattr(self, "epoch", e)))
    cfg = load_config(overrides=["train.epochs=3", "train.batch_size=9", "train.save_steps=-1", "train.bf16=false",
                                 "train.eval_each_epoch=false", "train.feature_cache=false"])
    model, _ = tiny.llava()
    fit(model, LLAVA, torch.float32, EncodedRows(tiny_encoder, tiny_rows, "train", AugmentConfig(views=2)), None, cfg,
        str(tmp_path), tiny.VOCAB["<pad>"])
    assert sorted(set(seen)) == [0, 1, 2]  # accelerate's DataLoader tells the dataset each epoch


def test_training_on_cached_views_gives_the_uncached_losses(tiny_rows, tiny_encoder, tmp_path):
    losses = []
    for cache in ("true", "false"):
        cfg = load_config(overrides=["train.epochs=2", "train.lr=1e-2", "train.batch_size=3", "train.logging_steps=1",
                                     "train.save_steps=-1", "train.eval_each_epoch=false", "train.bf16=false",
                                     f"train.feature_cache={cache}"])
        model, _ = tiny.llava()
        result = fit(model, LLAVA, torch.float32, EncodedRows(tiny_encoder, tiny_rows, "train", AugmentConfig(views=2)), None,
                     cfg, str(tmp_path / cache), tiny.VOCAB["<pad>"])
        losses.append([h["loss"] for h in result.log_history if "loss" in h])
    assert len(losses[0]) == 6 and np.allclose(losses[0], losses[1], rtol=1e-4)
