"""`vlmtune predict` and `vlmtune chat` on the tiny LLaVA: batched JSONL, rendered turns, streamed replies."""

import io
import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tiny

from vlmtune.cli import app
from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.chat import ChatSession, chat_loop, chat_messages, render_chat
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference
from vlmtune.models.registry import LLAVA
from vlmtune.stages.chat import run_chat
from vlmtune.data.pictures import open_picture
from vlmtune.stages.predict import option_overrides, run_predict

ASK, FOLLOW_UP = "describe this picture", "what is this ?"
COLOURS = [(9, 99, 199), (250, 250, 250), (200, 30, 30)]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_for_inference(tiny_model_dir)


def pictures(folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(COLOURS):
        paths.append(folder / f"p{i}.png")
        Image.new("RGB", (30, 30), colour).save(paths[-1])
    return paths


def greedy(tokens: int):
    return load_config(overrides=[f"eval.max_new_tokens={tokens}"]).eval


# --- rendering ---------------------------------------------------------------------------------

def test_first_turn_is_the_training_prompt_and_later_turns_keep_the_image_first(loaded):
    _, processor, _ = loaded
    assert render_chat(processor, LLAVA, [], ASK) == (
        "<|im_start|>user\n<image>\ndescribe this picture<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(processor, LLAVA, [(ASK, "a white rook")], FOLLOW_UP) == (
        "<|im_start|>user\n<image>\ndescribe this picture<|im_end|>\n"
        "<|im_start|>assistant\na white rook<|im_end|>\n"
        "<|im_start|>user\nwhat is this ?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert chat_messages([(ASK, "a")], "b") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ASK}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
    ]


# --- pictures and options ------------------------------------------------------------------------

def test_open_picture_applies_exif_orientation_and_names_bad_files(tmp_path):
    im = Image.new("RGB", (40, 20), (1, 2, 3))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert open_picture(tmp_path / "phone.jpg").size == (20, 40)
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(VlmtuneError, match=r"^.*notes\.jpg: corrupt or unsupported image data"):
        open_picture(tmp_path / "notes.jpg")
    with pytest.raises(VlmtuneError, match=r"^.*missing\.png: no such file$"):
        open_picture(tmp_path / "missing.png")


def test_options_become_validated_overrides():
    assert option_overrides(64, 2, 3, 0.7, "bf16") == ["eval.max_new_tokens=64", "eval.batch_size=2", "eval.num_beams=3",
                                                       "model.dtype=bf16", "eval.do_sample=true", "eval.temperature=0.7"]
    assert option_overrides(temperature=0) == ["eval.do_sample=false"]
    with pytest.raises(VlmtuneError, match="--temperature -1.0: must be >= 0"):
        option_overrides(temperature=-1.0)
    with pytest.raises(VlmtuneError, match="eval.batch_size"):
        load_config(overrides=option_overrides(batch_size=0))


# --- predict -------------------------------------------------------------------------------------

def test_predict_writes_batched_jsonl_equal_to_generate_answers(tmp_path, tiny_model_dir, loaded):
    paths = pictures(tmp_path / "pics")
    out = tmp_path / "preds.jsonl"
    # a file and a folder: the folder expands to its pictures in name order (p1, p2)
    rows = run_predict(tiny_model_dir, [paths[0], tmp_path / "pics"], out, prompt=ASK,
                       overrides=option_overrides(max_new_tokens=5, batch_size=2))
    model, processor, spec = loaded
    images = [Image.open(p).convert("RGB") for p in [paths[0], *paths]]
    want = generate_answers(model, processor, spec, images, [ASK] * 4, greedy(5))
    assert any(want)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == rows == [{"image": str(p), "prompt": ASK, "prediction": a} for p, a in zip([paths[0], *paths], want)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pics", "preds.jsonl"]  # no partial file left


def test_predict_refuses_existing_output_and_bad_pictures_before_loading(tmp_path, tiny_model_dir):
    paths = pictures(tmp_path / "pics")
    out = tmp_path / "preds.jsonl"
    out.write_text("mine\n")
    with pytest.raises(VlmtuneError, match="preds.jsonl: exists; pass --overwrite"):
        run_predict(tiny_model_dir, paths, out)
    (tmp_path / "pics/broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VlmtuneError, match=r"broken\.png: corrupt or unsupported image data"):
        run_predict(tmp_path / "no-model-needed", [tmp_path / "pics"], out, overwrite=True)
    with pytest.raises(VlmtuneError, match=r"gone\.jpg: no such file"):
        run_predict(tmp_path / "no-model-needed", [tmp_path / "gone.jpg"], out, overwrite=True)
    assert out.read_text() == "mine\n"


def test_predict_cli(tmp_path, tiny_model_dir):
    paths = pictures(tmp_path / "pics")
    out = tmp_path / "preds.jsonl"
    args = ["predict", str(tiny_model_dir), str(paths[0]), "--prompt", ASK, "-o", str(out), "--max-new-tokens", "3"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "1 predictions written to" in first.output
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, VlmtuneError)
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0


# --- chat ----------------------------------------------------------------------------------------

class Recorder(io.StringIO):
    """Keeps each non-empty write, to see that a reply arrives in pieces rather than all at the end."""

    def __init__(self):
        super().__init__()
        self.pieces = []

    def write(self, text):
        if text:
            self.pieces.append(text)
        return super().write(text)


def expected_reply(model, processor, text: str, picture, tokens: int) -> str:
    """Greedy continuation of a rendered prompt, computed without the chat code."""
    inputs = processor(images=[picture], text=[text], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=tokens, do_sample=False, eos_token_id=[tiny.VOCAB["<|im_end|>"]],
                             pad_token_id=tiny.VOCAB["<pad>"])
    return processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_chat_is_multi_turn_streams_and_resets(loaded, tmp_path):
    model, processor, spec = loaded
    picture = Image.new("RGB", (30, 30), COLOURS[0])
    first = generate_answers(model, processor, spec, [picture], [ASK], greedy(6))[0]
    second_prompt = render_chat(processor, spec, [(ASK, first)], FOLLOW_UP)
    second = expected_reply(model, processor, second_prompt, picture, 6)
    assert len(first.split()) >= 2 and second
    session = ChatSession(model, processor, spec, greedy(6), picture)
    out, err = Recorder(), io.StringIO()
    chat_loop(session, io.StringIO(f"{ASK}\n{FOLLOW_UP}\n/reset\n{ASK}\n\nnever asked\n"), out, err, open_picture)
    assert [line.strip() for line in out.getvalue().splitlines()] == [first, second, first]
    # streamed: the first reply arrives in several pieces (words) before its closing newline
    first_reply = out.pieces[: out.pieces.index("\n")]
    assert len(first_reply) >= 2 and "".join(first_reply) == first
    assert session.history == [(ASK, first)]  # /reset forgot the first exchange; the empty line ended the chat
    assert err.getvalue() == "(conversation cleared)\n"


def test_chat_image_command_switches_picture_and_survives_bad_paths(loaded, tmp_path):
    model, processor, spec = loaded
    paths = pictures(tmp_path / "pics")
    session = ChatSession(model, processor, spec, greedy(4), open_picture(paths[0]))
    session.history.append((ASK, "a white rook"))
    err = io.StringIO()
    chat_loop(session, [f"/image {tmp_path / 'nope.png'}\n", "/help\n", f"/image {paths[1]}\n", "/quit\n", ASK],
              io.StringIO(), err, open_picture)
    lines = err.getvalue().splitlines()
    assert lines[0] == f"error: {tmp_path / 'nope.png'}: no such file"
    assert lines[1].startswith("commands: /image PATH")
    assert lines[2] == f"(new picture {paths[1]}; conversation cleared)"
    assert session.history == [] and session.image.getpixel((0, 0)) == COLOURS[1]


def test_chat_stage_reads_a_pipe(tmp_path, tiny_model_dir, loaded):
    model, processor, spec = loaded
    paths = pictures(tmp_path / "pics")
    want = generate_answers(model, processor, spec, [open_picture(paths[2])], [ASK], greedy(5))[0]
    out = io.StringIO()
    run_chat(tiny_model_dir, paths[2], overrides=["eval.max_new_tokens=5"], stdin=io.StringIO(ASK + "\n"), stdout=out,
             stderr=io.StringIO())
    assert out.getvalue().strip() == want and want
    result = CliRunner().invoke(app, ["chat", str(tiny_model_dir), "--image", str(paths[2]), "--max-new-tokens", "5"],
                                input=ASK + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == want
    missing = CliRunner().invoke(app, ["chat", str(tiny_model_dir), "--image", str(tmp_path / "x.heic")], input="")
    assert str(missing.exception) == f"{tmp_path / 'x.heic'}: no such file"
