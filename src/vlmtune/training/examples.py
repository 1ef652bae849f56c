"""Training examples the Trainer draws one by one, so memory does not grow with the data.

Pixel tensors are large (a 168 px picture is 0.34 MB in fp32, a LLaVA-NeXT sample about 6.8 MB),
so no split is ever held encoded. ``EncodedRows`` encodes row i (decode + processor + tokenizer)
when the Trainer asks for it. With the feature cache, ``CachedRows`` keeps each row's text part
(token ids and labels, a few KB) and reads its vision features back from a ``FeatureStore`` file.

Every row is still encoded once up front (``check`` or the feature pass), holding nothing, so a
row that cannot be trained on stops the run before any training or evaluation work.

With augmentation (data.augment) a train split has ``views`` versions of each picture, view 0 the
picture itself; epoch e draws view (e + i) mod views of picture i. A view is a fixed function of
(seed, picture, view), so the feature cache precomputes every view in its one pass and a run
without the cache trains on exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vlmtune.config import AugmentConfig
from vlmtune.data.augment import active, augment, view_rng
from vlmtune.data.images import model_rgb
from vlmtune.data.schema import ANSWER, IMAGE, PROMPT
from vlmtune.models.family import FamilySpec
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.training.features import FEATURES, FeatureStore, compute_features

Observer = Callable[[dict], None]


def encode_row(encoder: PromptAnswerTokenizer, row: dict, where: str, view=None) -> dict:
    """``view``: a function of the RGB picture (an augmentation), or None for the picture itself."""
    image = row[IMAGE]
    name = Path(getattr(image, "filename", "") or "").name  # a row index alone is hard to find in a carved split
    picture = model_rgb(image)
    example = encoder.encode(view(picture) if view else picture, row[PROMPT], row[ANSWER],
                             where=f"{where} ({name})" if name else where)
    example.pop("truncated", None)  # answers that do not fit are refused, never cut
    return example


class EncodedRows(Dataset):
    """Rows of one split (a ``datasets.Dataset``), encoded on access; augmented views for train."""

    def __init__(self, encoder: PromptAnswerTokenizer, rows, split: str, augment: AugmentConfig | None = None,
                 seed: int = 0):
        self.encoder, self.rows, self.split = encoder, rows, split
        self.augment, self.seed = augment, seed
        self.views = augment.views if augment is not None and active(augment) else 1
        self.epoch = 0
        self.checked = False

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Called at each epoch start (accelerate's DataLoader does): which view each picture shows."""
        self.epoch = epoch

    def view_of(self, i: int) -> int:
        return (self.epoch + i) % self.views

    def encode(self, i: int, view: int) -> dict:
        transform = None
        if view:
            transform = lambda picture: augment(picture, self.augment, view_rng(self.seed, i, view))  # noqa: E731
        return encode_row(self.encoder, self.rows[i], f"{self.split} row {i}", transform)

    def __getitem__(self, i: int) -> dict:
        return self.encode(i, self.view_of(i))

    def __iter__(self):
        for i in range(len(self)):
            yield self.encode(i, 0)

    def all_views(self, observe: Observer | None = None) -> Iterator[dict]:
        """Every view of every row, row by row; ``observe`` sees each row's view 0 (its statistics)."""
        for i in range(len(self)):
            for view in range(self.views):
                example = self.encode(i, view)
                if observe is not None and view == 0:
                    observe(example)
                yield example

    def check(self, observe: Observer | None = None) -> "EncodedRows":
        """Encode every row once and keep nothing: a row that does not fit stops the run now."""
        if not self.checked or observe is not None:
            for _ in tqdm(observed(self, observe), total=len(self), desc=f"checking {self.split}", unit="sample"):
                pass
            self.checked = True
        return self


class CachedRows(Dataset):
    """Text part of each example in memory, its frozen-vision features read from disk on access
    (``views`` feature tensors per picture, drawn per epoch as ``EncodedRows`` draws its views)."""

    def __init__(self, texts: list[dict], store: FeatureStore, views: int = 1):
        self.texts, self.store, self.views = texts, store, views
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.texts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        return {**self.texts[i], FEATURES: self.store[i * self.views + (self.epoch + i) % self.views]}


def cached_rows(model, spec: FamilySpec, rows: EncodedRows, folder: Path | None = None,
                observe: Observer | None = None) -> CachedRows:
    """One pass over ``rows``: each encoded (and so checked), the pixels of its every view turned
    into features on disk. A view's text part is its picture's (augmentations keep the size)."""
    if rows.views > 1:
        print(f"augmentation: {rows.views} views of each of the {len(rows)} {rows.split} pictures "
              f"(data.augment.views): the feature pass encodes {rows.views}x the pictures, training costs the same")
    store = FeatureStore(folder)
    done = compute_features(model, spec, rows.all_views(observe), store=store, total=len(rows) * rows.views)
    return CachedRows(done[:: rows.views], store, rows.views)


def observed(examples: Iterable[dict], observe: Observer | None) -> Iterator[dict]:
    """``examples``, each shown to ``observe`` first (e.g. sequence statistics taken in the same pass)."""
    for example in examples:
        if observe is not None:
            observe(example)
        yield example
