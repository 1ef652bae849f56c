"""Training examples the Trainer draws one by one, so memory does not grow with the data.

Pixel tensors are large (a 168 px picture is 0.34 MB in fp32, a LLaVA-NeXT sample about 6.8 MB),
so no split is ever held encoded. ``EncodedRows`` encodes row i (decode + processor + tokenizer)
when the Trainer asks for it. With the feature cache, ``CachedRows`` keeps each row's text part
(token ids and labels, a few KB) and reads its vision features back from a ``FeatureStore`` file.

Every row is still encoded once up front (``check`` or the feature pass), holding nothing, so a
row that cannot be trained on stops the run before any training or evaluation work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vlmtune.data.images import model_rgb
from vlmtune.data.schema import ANSWER, IMAGE, PROMPT
from vlmtune.models.family import FamilySpec
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.training.features import FEATURES, FeatureStore, compute_features

Observer = Callable[[dict], None]


def encode_row(encoder: PromptAnswerTokenizer, row: dict, where: str) -> dict:
    image = row[IMAGE]
    name = Path(getattr(image, "filename", "") or "").name  # a row index alone is hard to find in a carved split
    example = encoder.encode(model_rgb(image), row[PROMPT], row[ANSWER], where=f"{where} ({name})" if name else where)
    example.pop("truncated", None)  # answers that do not fit are refused, never cut
    return example


class EncodedRows(Dataset):
    """Rows of one split (a ``datasets.Dataset``), encoded on access."""

    def __init__(self, encoder: PromptAnswerTokenizer, rows, split: str):
        self.encoder, self.rows, self.split = encoder, rows, split
        self.checked = False

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return encode_row(self.encoder, self.rows[i], f"{self.split} row {i}")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def check(self, observe: Observer | None = None) -> "EncodedRows":
        """Encode every row once and keep nothing: a row that does not fit stops the run now."""
        if not self.checked or observe is not None:
            for _ in tqdm(observed(self, observe), total=len(self), desc=f"checking {self.split}", unit="sample"):
                pass
            self.checked = True
        return self


class CachedRows(Dataset):
    """Text part of each example in memory, its frozen-vision features read from disk on access."""

    def __init__(self, texts: list[dict], store: FeatureStore):
        self.texts, self.store = texts, store

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {**self.texts[i], FEATURES: self.store[i]}


def cached_rows(model, spec: FamilySpec, rows: EncodedRows, folder: Path | None = None,
                observe: Observer | None = None) -> CachedRows:
    """One pass over ``rows``: each encoded (and so checked), its pixels turned into features on disk."""
    store = FeatureStore(folder)
    texts = compute_features(model, spec, observed(rows, observe), store=store, total=len(rows))
    return CachedRows(texts, store)


def observed(examples: Iterable[dict], observe: Observer | None) -> Iterator[dict]:
    """``examples``, each shown to ``observe`` first (e.g. sequence statistics taken in the same pass)."""
    for example in examples:
        if observe is not None:
            observe(example)
        yield example
