"""LFM2-VL's image processing on PIL/NumPy: transformers 5.24 ships it for torchvision only.

``Lfm2VlImageProcessor`` (models/lfm2_vl/image_processing_lfm2_vl.py) imports torchvision at module
level, and torchvision cannot be installed beside the CPU torch wheel, so without this class an
LFM2-VL checkpoint cannot even be loaded there. This is the same algorithm, step for step, on
transformers' PIL backend (as its Siglip2ImageProcessorPil does for the NaFlex patches the LFM2-VL
vision tower reads):

- a picture whose 32 px-rounded area exceeds ``max_image_tokens`` x 32^2 x ``max_pixels_tolerance``
  is cut into a grid of 512 px tiles (2-10, the grid whose aspect is closest to the picture's) plus
  a thumbnail; any other picture is resized as a whole (``smart_resize``: sides multiples of 32 px,
  ``min_image_tokens``..``max_image_tokens`` tokens of 32 px);
- each view becomes 16 px patches, zero-padded to ``max_num_patches`` with a pixel mask, and its
  patch grid goes into ``spatial_shapes``.

Resizing is PIL's bilinear where torchvision's is antialiased bilinear on tensors: shapes, token
counts and layout are identical, pixel values differ slightly. Saved, it names the stock class,
so AutoImageProcessor opens the run with torchvision's where that is installed.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

STOCK = "Lfm2VlImageProcessor"


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def closest_grid(aspect: float, grids: list[tuple[int, int]], width: int, height: int, tile: int) -> tuple[int, int]:
    """(columns, rows) whose aspect is closest to ``aspect``; a tie goes to the later (larger) grid when the
    picture covers more than half of it."""
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


@cache
def lfm2_vl_image_processor_class() -> type:
    """The class, built on first use: defining it imports transformers' image-processing modules."""
    from transformers.image_processing_backends import PilBackend
    from transformers.image_processing_utils import BatchFeature
    from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling, SizeDict
    from transformers.models.siglip2.image_processing_pil_siglip2 import convert_image_to_patches, pad_along_first_dim
    from transformers.processing_utils import ImagesKwargs

    class Lfm2VlImagesKwargs(ImagesKwargs, total=False):
        """The stock class's own keyword arguments (its Lfm2VlImageProcessorKwargs, in the torchvision module)."""

        downsample_factor: int
        do_image_splitting: bool
        min_tiles: int
        max_tiles: int
        use_thumbnail: bool
        min_image_tokens: int
        max_image_tokens: int
        encoder_patch_size: int
        tile_size: int
        max_pixels_tolerance: float
        do_pad: bool
        return_row_col_info: bool


    class Lfm2VlImageProcessorPil(PilBackend):
        downsample_factor = 2
        do_image_splitting = True
        min_tiles = 2
        max_tiles = 10
        use_thumbnail = True
        min_image_tokens = 64
        max_image_tokens = 256
        encoder_patch_size = 16
        tile_size = 512
        max_pixels_tolerance = 2.0
        do_resize = True
        size = {"height": 512, "width": 512}
        resample = PILImageResampling.BILINEAR
        do_rescale = True
        rescale_factor = 1 / 255
        do_normalize = True
        do_pad = True
        return_row_col_info = False
        image_mean = IMAGENET_STANDARD_MEAN
        image_std = IMAGENET_STANDARD_STD
        model_input_names = ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
        valid_kwargs = Lfm2VlImagesKwargs

        def to_dict(self):
            return {**super().to_dict(), "image_processor_type": STOCK}

        def _grids(self, min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
            grids = {(w, h) for n in range(min_tiles, max_tiles + 1) for w in range(1, n + 1) for h in range(1, n + 1)
                     if min_tiles <= w * h <= max_tiles}
            return sorted(grids, key=lambda g: g[0] * g[1])

        def smart_resize(self, height: int, width: int, patch: int, downsample: int, min_tokens: int, max_tokens: int):
            """(width, height): sides multiples of one token (patch x downsample px), area within [min_tokens, max_tokens]."""
            factor = patch * downsample
            low, high = min_tokens * factor**2, max_tokens * factor**2
            h_bar = max(factor, round_by_factor(height, factor))
            w_bar = max(factor, round_by_factor(width, factor))
            if h_bar * w_bar > high:
                beta = math.sqrt(height * width / high)
                h_bar = max(factor, math.floor(height / beta / factor) * factor)
                w_bar = max(factor, math.floor(width / beta / factor) * factor)
            elif h_bar * w_bar < low:
                beta = math.sqrt(low / (height * width))
                h_bar = math.ceil(height * beta / factor) * factor
                w_bar = math.ceil(width * beta / factor) * factor
            return w_bar, h_bar

        def _views(self, image: np.ndarray, resample, min_tiles: int, max_tiles: int, use_thumbnail: bool,
                   min_image_tokens: int, max_image_tokens: int, encoder_patch_size: int, downsample_factor: int,
                   tile_size: int, max_pixels_tolerance: float) -> tuple[list[np.ndarray], int, int, list[int]]:
            """(views, rows, cols, [height, width] of the whole-picture view) for one (C, H, W) picture."""
            height, width = image.shape[-2:]
            factor = encoder_patch_size * downsample_factor
            rounded = max(encoder_patch_size, round_by_factor(height, factor)) * max(encoder_patch_size,
                                                                                      round_by_factor(width, factor))
            too_large = rounded > max_image_tokens * encoder_patch_size**2 * downsample_factor**2 * max_pixels_tolerance
            new_w, new_h = self.smart_resize(height, width, encoder_patch_size, downsample_factor, min_image_tokens,
                                             max_image_tokens)
            if too_large and not min_tiles == max_tiles == 1:
                cols, rows = closest_grid(width / height, self._grids(min_tiles, max_tiles), width, height, tile_size)
                grid = self.resize(image, SizeDict(height=tile_size * rows, width=tile_size * cols), resample=resample)
                views = [grid[:, r * tile_size:(r + 1) * tile_size, c * tile_size:(c + 1) * tile_size]
                         for r in range(rows) for c in range(cols)]
                if use_thumbnail and rows * cols != 1:
                    views.append(self.resize(image, SizeDict(height=new_h, width=new_w), resample=resample))
                return views, rows, cols, [new_h, new_w]
            return [self.resize(image, SizeDict(height=new_h, width=new_w), resample=resample)], 1, 1, [new_h, new_w]

        def _preprocess(self, images: list[np.ndarray], resample, do_rescale: bool, rescale_factor: float,
                        do_normalize: bool, image_mean, image_std, downsample_factor: int, do_image_splitting: bool,
                        min_tiles: int, max_tiles: int, use_thumbnail: bool, min_image_tokens: int, max_image_tokens: int,
                        encoder_patch_size: int, tile_size: int, max_pixels_tolerance: float, do_pad: bool,
                        return_row_col_info: bool, return_tensors=None, **kwargs) -> BatchFeature:
            if not do_image_splitting:
                min_tiles = max_tiles = 1
            elif min_tiles > max_tiles:
                raise ValueError("min_tiles must be less than or equal to max_tiles")
            max_num_patches = max(max_image_tokens * downsample_factor**2,
                                  (tile_size // encoder_patch_size) ** 2 if do_image_splitting else 0)
            pixels, masks, shapes, rows, cols, sizes = [], [], [], [], [], []
            for image in images:
                views, r, c, size = self._views(image, resample, min_tiles, max_tiles, use_thumbnail, min_image_tokens,
                                                max_image_tokens, encoder_patch_size, downsample_factor, tile_size,
                                                max_pixels_tolerance)
                rows.append(r), cols.append(c), sizes.append(size)
                for view in views:
                    if do_rescale:
                        view = self.rescale(view, rescale_factor)
                    if do_normalize:
                        view = self.normalize(view, image_mean, image_std)
                    shapes.append([view.shape[-2] // encoder_patch_size, view.shape[-1] // encoder_patch_size])
                    patches = convert_image_to_patches(view, encoder_patch_size)
                    if do_pad:
                        patches, mask = pad_along_first_dim(patches, max_num_patches)
                        masks.append(mask)
                    pixels.append(patches)
            data = {"pixel_values": np.stack(pixels)}
            if do_pad:
                data.update(pixel_attention_mask=np.stack(masks), spatial_shapes=np.array(shapes))
            if return_row_col_info:
                data.update(image_rows=rows, image_cols=cols, image_sizes=sizes)
            return BatchFeature(data=data, tensor_type=return_tensors)

    return Lfm2VlImageProcessorPil
