import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A private vlmtune cache per test."""
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import tiny

    return tiny.save_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir):
    """A finished `vlmtune train` run on the tiny LLaVA (adapter, predictions, report, 3 test pictures)."""
    import tiny

    return tiny.trained_run(tmp_path_factory.mktemp("tiny-run") / "run", tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    """The 9 train rows of a 12-picture tiny caption folder (solid colours)."""
    import tiny
    from vlmtune.data.dataset import build_dataset

    return build_dataset(tiny.caption_folder(tmp_path_factory.mktemp("data"), n=12), "Describe this picture.")["train"]


@pytest.fixture()
def tiny_encoder():
    """The prompt/answer tokenizer of the tiny LLaVA (64 tokens)."""
    import tiny
    from vlmtune.models.prompting import PromptAnswerTokenizer
    from vlmtune.models.registry import LLAVA

    return PromptAnswerTokenizer(tiny.llava()[1], LLAVA, 64)
