"""Pictures dropped into the page: decoded by the code ``data convert`` uses, and never kept.

An upload is a file Gradio wrote into its cache folder. It is decoded once (EXIF orientation,
16-bit, alpha, HEIC: ``data.pictures.open_picture``) into a small in-memory cache keyed by that
path (Gradio names uploads by a hash of their bytes), and the file is deleted after the answer,
or at once when it cannot be decoded. Asking again about the same picture reads the cache.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from vlmtune.data.pictures import open_picture
from vlmtune.errors import VlmtuneError

# The embedded default sees 224 px and every registry family resizes to at most ~1.5k px per side
# (or caps its tiles), so 2048 px keeps what any model uses while a cached picture stays <= 12 MB.
MAX_SIDE = 2048
CACHED_PICTURES = 16
# A server decodes for strangers: lower than convert's 256 MP, still above 48-50 MP phone photos.
WEB_MAX_PIXELS = 64_000_000


def decode_upload(path: str | Path, max_pixels: int = WEB_MAX_PIXELS) -> Image.Image:
    """The picture the models see; a bad file gives a one-line error naming it by its own name."""
    path = Path(path)
    try:
        picture = open_picture(path, max_pixels)
    except VlmtuneError as err:  # the message names Gradio's cache path; the user knows the file name
        raise VlmtuneError(str(err).replace(str(path), path.name)) from None
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return picture


def thumbnail_data_url(picture: Image.Image, side: int = 112) -> str:
    """A small inline JPEG of what the models see: browsers cannot show HEIC, and it needs no file."""
    small = picture.copy()
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class PictureCache:
    """Decoded pictures by upload path (least recently used dropped first), and the uploads to delete.

    ``is_upload(path)`` tells a user's upload (deleted after use) from the page's own example files.
    """

    def __init__(self, is_upload, max_pixels: int = WEB_MAX_PIXELS, size: int = CACHED_PICTURES):
        self.is_upload, self.max_pixels, self.size = is_upload, max_pixels, size
        self._pictures: OrderedDict[str, Image.Image] = OrderedDict()
        self._errors: OrderedDict[str, str] = OrderedDict()  # why a deleted bad upload was refused
        self._lock = threading.Lock()

    def get(self, path: str | None) -> Image.Image:
        if not path:
            raise VlmtuneError("no picture yet: drop, paste or upload one first")
        with self._lock:
            if path in self._pictures:
                self._pictures.move_to_end(path)
                return self._pictures[path]
            if path in self._errors:  # asked again (the button, a second change event): same reason
                raise VlmtuneError(self._errors[path])
        if not Path(path).is_file():
            raise VlmtuneError(f"{Path(path).name}: no longer on the server (uploads are deleted after each answer); "
                               "drop it again")
        try:
            picture = decode_upload(path, self.max_pixels)
        except VlmtuneError as err:
            self._remember(self._errors, path, str(err))
            self.forget(path)  # nothing worth keeping in a file that cannot be decoded
            raise
        self._remember(self._pictures, path, picture)
        return picture

    def _remember(self, table: OrderedDict, path: str, value) -> None:
        with self._lock:
            table[path] = value
            while len(table) > self.size:
                table.popitem(last=False)

    def forget(self, path: str | None) -> None:
        """Delete the uploaded file (the decoded copy stays cached for another question)."""
        if path and self.is_upload(path):
            Path(path).unlink(missing_ok=True)
            try:
                Path(path).parent.rmdir()  # Gradio's per-upload folder, if nothing else is in it
            except OSError:
                pass
