"""Examples encoded when the Trainer draws them: no pixels held per row, results exact, bad tiny_rows still stop early."""

import gc
import weakref

import pytest
import torch

import tiny
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.registry import LLAVA
from vlmtune.training.examples import EncodedRows, cached_rows, encode_row
from vlmtune.training.features import FEATURES, FeatureStore, compute_features
from vlmtune.training.fit import encode_split, fit, ready


def eager(tiny_encoder, tiny_rows):
    """What encode_split used to return: every example encoded and held."""
    return [encode_row(tiny_encoder, tiny_rows[i], f"train row {i}") for i in range(len(tiny_rows))]


@pytest.fixture()
def pixel_refs(monkeypatch):
    """Weak references to every pixel tensor an encode makes: dead ones were not kept."""
    refs, original = [], PromptAnswerTokenizer.encode

    def spy(self, *args, **kwargs):
        example = original(self, *args, **kwargs)
        refs.append(weakref.ref(example["pixel_values"]))
        return example

    monkeypatch.setattr(PromptAnswerTokenizer, "encode", spy)
    return refs


def test_a_row_encodes_on_access_exactly_as_it_did_up_front(tiny_rows, tiny_encoder):
    lazy, want = EncodedRows(tiny_encoder, tiny_rows, "train"), eager(tiny_encoder, tiny_rows)
    assert len(lazy) == len(want) == 9
    for i in (0, 4, 8):
        got = lazy[i]
        assert got.keys() == want[i].keys() == {"input_ids", "labels", "pixel_values"}
        assert got["input_ids"] == want[i]["input_ids"] and got["labels"] == want[i]["labels"]
        assert torch.equal(got["pixel_values"], want[i]["pixel_values"])


def test_no_pixel_tensor_outlives_the_up_front_pass(tiny_rows, tiny_encoder, pixel_refs):
    model, _ = tiny.llava()
    cfg = load_config(overrides=["train.feature_cache=false"])
    checked = ready(model, LLAVA, cfg, encode_split(tiny_encoder, tiny_rows, "train"))
    gc.collect()
    assert len(pixel_refs) == 9 and all(ref() is None for ref in pixel_refs)
    assert checked.checked and torch.equal(checked[3]["pixel_values"], eager(tiny_encoder, tiny_rows)[3]["pixel_values"])


def test_cached_rows_hold_only_text_and_read_back_the_exact_features(tiny_rows, tiny_encoder, pixel_refs, tmp_path):
    model, _ = tiny.llava()
    cached = cached_rows(model, LLAVA, EncodedRows(tiny_encoder, tiny_rows, "train"), tmp_path)
    gc.collect()
    assert len(pixel_refs) == 9 and all(ref() is None for ref in pixel_refs)
    assert all(set(t) == {"input_ids", "labels"} for t in cached.texts)  # features live in the store's file
    assert list(tmp_path.iterdir()) == []  # ...which has no name: nothing to clean up after a crash
    want = compute_features(model, LLAVA, eager(tiny_encoder, tiny_rows))  # the in-memory way, same batches of 16
    for i in range(len(tiny_rows)):
        got = cached[i]
        assert got["input_ids"] == want[i]["input_ids"] and got["labels"] == want[i]["labels"]
        assert got[FEATURES].dtype == torch.float32 and torch.equal(got[FEATURES], want[i][FEATURES])


def test_feature_store_round_trips_any_shape_exactly(tmp_path):
    store = FeatureStore(tmp_path)
    tensors = [torch.randn(1, 5, 3), torch.randn(1, 2, 7).bfloat16(), torch.randn(4)]
    for t in tensors:
        store.append(t)
    assert len(store) == 3
    for i in (2, 0, 1):  # any order
        assert torch.equal(store[i], tensors[i].float())


@pytest.mark.parametrize("feature_cache", [True, False])
def test_training_on_lazy_rows_gives_the_losses_of_encoded_lists(tiny_rows, tiny_encoder, feature_cache, tmp_path):
    cfg = load_config(overrides=["train.max_steps=3", "train.lr=1e-2", "train.batch_size=4", "train.logging_steps=1",
                                 "train.save_steps=-1", "train.eval_each_epoch=false", "train.bf16=false",
                                 f"train.feature_cache={str(feature_cache).lower()}"])
    losses = []
    for examples in (eager(tiny_encoder, tiny_rows), encode_split(tiny_encoder, tiny_rows, "train")):
        model, _ = tiny.llava()
        result = fit(model, LLAVA, torch.float32, examples, None, cfg, str(tmp_path), tiny.VOCAB["<pad>"])
        losses.append([h["loss"] for h in result.log_history if "loss" in h])
    assert len(losses[0]) == 3 and losses[0] == losses[1]


def test_an_answer_that_does_not_fit_stops_train_before_the_base_evaluation(tmp_path, tiny_model_dir):
    from vlmtune.stages.train import train_run

    data = tiny.caption_folder(tmp_path / "data")  # train row 1 is "a white queen and a black pawn": 8 tokens
    out = tmp_path / "run"
    # prompt 18 tokens ("describe this picture in a few words ."), so 24 fits "a black knight" but not row 1
    cfg = load_config(overrides=[f"model.name={tiny_model_dir}", f"data.path={data}", f"output_dir={out}",
                                 "data.max_length=24", "train.bf16=false", "train.eval_each_epoch=false",
                                 "data.prompts=[]"])  # one prompt: the paraphrases are longer
    with pytest.raises(VlmtuneError, match=r"^train row 1 \(pic_2.png\): prompt \(18 tokens\) \+ answer \(8 tokens .* = 26 > "
                                           r"data.max_length=24: the answer would be cut; raise data.max_length to at least 26"):
        train_run(cfg)
    assert not (out / "predictions").exists() and not (out / "checkpoints").exists()
