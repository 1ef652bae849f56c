"""The one sample schema every stage speaks, from data prep to collator.

A *caption folder* is what users (and the synthetic generators) write: images anywhere below a
directory plus ``captions.csv`` with ``file_name`` (relative to the folder, POSIX separators),
``caption``, optional ``split`` (train/validation/test), optional ``prompt`` and any extra label columns
(e.g. chess ``pieces``). ``vlmtune data build`` turns it into a ``datasets.DatasetDict`` whose
rows are (image, prompt, answer, *extras*): the canonical sample.
"""

from vlmtune.config import DEFAULT_PROMPT  # noqa: F401  (defined beside the config key it defaults)

IMAGE = "image"
PROMPT = "prompt"
ANSWER = "answer"
CANONICAL_COLUMNS = (IMAGE, PROMPT, ANSWER)

CAPTIONS_FILE = "captions.csv"
FILE_NAME = "file_name"
CAPTION = "caption"
SPLIT = "split"
TRAIN, TEST = "train", "test"
VALIDATION = "validation"  # eval loss and early stopping; never the test split
