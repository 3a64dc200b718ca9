"""Image -> model input, exactly as timm evaluates a pretrained checkpoint.

timm 1.0.31's eval transform (``transforms_imagenet_eval``, ``crop_mode='center'``)
on a PIL image is::

    Resize(floor(size / crop_pct), interpolation)   # shorter side; PIL resize, antialiased
    CenterCrop(size)
    ToTensor()                                      # float32 / 255
    Normalize(mean, std)

A Caffe conversion's config (Cadene's BN-Inception: ``input_space="BGR"``, ``input_range=(0, 255)``,
mean 104/117/128, std 1) reorders the channels to BGR and multiplies by 255 after ``ToTensor``, as
pretrainedmodels' ``TransformImage`` does (``ToSpaceBGR``, ``ToRange255``), then normalises.

torchvision's Resize on a PIL image calls ``PIL.Image.resize`` itself, so doing the
same Pillow calls here gives the same pixels; the float steps are done in float32
in the same order, so the result equals timm's to float rounding (the fixtures in
``tests/data/preprocess`` agree to ~1e-7).

Size: an image is resized before it is cropped, so an extreme aspect ratio (a 1x60000 strip)
would ask for a huge intermediate image. The resize target is computed first and refused when
it exceeds :data:`MAX_RESIZED_PIXELS`; Pillow's own decompression-bomb guard
(``Image.MAX_IMAGE_PIXELS``) stays on for the decoded image itself.

Colour: every image is converted with ``Image.convert("RGB")``, as timm's loaders do:
grayscale is replicated to three channels, palette images take their palette colours,
and an alpha channel is dropped (not composited onto a background). EXIF orientation
is not applied (timm does not either); 16-bit images are converted as Pillow does.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from se_multi.pretrained import PretrainedCfg, get_config

ImageLike = Union[str, os.PathLike, Image.Image]

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}

#: the largest image (pixels) the resize before the crop may produce: 64 Mpx, ~192 MiB as RGB
MAX_RESIZED_PIXELS = 1 << 26


class ImageError(OSError):
    """An image file that is missing or cannot be decoded (an ``OSError``: the CLI reports it in one line)."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as RGB; any failure names the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"image not found: {path}")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, expected an image file")
    return decode_image(path, path)


def decode_image(source, name: str) -> Image.Image:
    """Fully decode ``source`` (a path or a binary file object) as RGB; failures name ``name``."""
    try:
        with Image.open(source) as img:
            img.load()  # decode now, so a truncated file fails here rather than halfway through resize
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read (PNG, JPEG, ...)") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... for corrupt data
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None


def _as_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    hint = (" (an array is already a tensor: pass NCHW float input to the model directly, "
            "or wrap pixels with PIL.Image.fromarray)") if isinstance(image, np.ndarray) else ""
    raise TypeError(f"expected an image path or a PIL image; got {type(image).__name__}{hint}")


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``'s target: shorter side to ``size``, longer side
    ``int(size * long / short)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def resize_shorter_side(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image, Pillow's (antialiased) filter."""
    return img.resize(shorter_side_size(*img.size, size), _FILTERS[interpolation])


def _check_resize(source: str, image_size: tuple[int, int], target: tuple[int, int], crop) -> None:
    pixels = target[0] * target[1]
    if pixels > MAX_RESIZED_PIXELS:
        raise ImageError(f"{source}: a {image_size[0]}x{image_size[1]} image would be resized to "
                         f"{target[0]}x{target[1]} ({pixels / 1e6:.0f} Mpx) before its {crop[1]}x{crop[0]} crop; "
                         f"the limit is {MAX_RESIZED_PIXELS / 1e6:.0f} Mpx (se_multi.preprocess.MAX_RESIZED_PIXELS): "
                         "crop the image to a less extreme aspect ratio first")


def _crop_offset(size: int, crop: int) -> int:
    # torchvision CenterCrop: int(round(...)) on the image; when the crop is larger it pads
    # (crop - size) // 2 before, i.e. a negative offset (Pillow fills outside pixels with 0 as the pad does)
    return int(round((size - crop) / 2.0)) if size >= crop else -((crop - size) // 2)


def center_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    w, h = img.size
    top, left = _crop_offset(h, height), _crop_offset(w, width)
    return img.crop((left, top, left + width, top + height))


def _check_cfg(cfg: PretrainedCfg) -> None:
    if cfg.interpolation not in _FILTERS:
        raise ValueError(f"{cfg.tag}: interpolation {cfg.interpolation!r} not supported; expected one of {sorted(_FILTERS)}")
    if cfg.crop_mode != "center":
        raise ValueError(f"{cfg.tag}: crop_mode {cfg.crop_mode!r} not supported; expected 'center'")
    if not cfg.crop_pct > 0:
        raise ValueError(f"{cfg.tag}: crop_pct must be > 0; got {cfg.crop_pct}")
    if cfg.input_space not in ("RGB", "BGR"):
        raise ValueError(f"{cfg.tag}: input_space {cfg.input_space!r} not supported; expected 'RGB' or 'BGR'")
    if cfg.input_size[0] not in (1, 3) or len(cfg.mean) != cfg.input_size[0] or len(cfg.std) != cfg.input_size[0]:
        raise ValueError(f"{cfg.tag}: input_size {cfg.input_size!r} with mean {cfg.mean!r} and std {cfg.std!r}: "
                         "expected 1 (gray) or 3 (colour) channels, with one mean and std per channel")
    if tuple(cfg.input_range) not in ((0, 1), (0, 255)):
        raise ValueError(f"{cfg.tag}: input_range {cfg.input_range!r} not supported; expected (0, 1) or (0, 255)")


def transform(img: Image.Image, cfg: PretrainedCfg, source: str = "image") -> np.ndarray:
    """One RGB PIL image -> a (3, H, W) float32 array (timm's eval transform), or (1, H, W), its luma,
    for a one-channel config. The resize target is checked against :data:`MAX_RESIZED_PIXELS`
    before anything is allocated."""
    _check_cfg(cfg)
    _, height, width = cfg.input_size
    if height == width:
        target = shorter_side_size(*img.size, cfg.resize_size)
    else:  # timm resizes a non-square input size to (floor(H / crop_pct), floor(W / crop_pct))
        target = (int(np.floor(width / cfg.crop_pct)), int(np.floor(height / cfg.crop_pct)))
    _check_resize(source, img.size, target, (height, width))
    img = img.resize(target, _FILTERS[cfg.interpolation])
    img = center_crop(img, height, width)
    if cfg.input_size[0] == 1:  # a one-channel model (QuickNAT's MRI slice): the image's luma (a gray image's own values)
        img = img.convert("L")
    x = np.asarray(img, dtype=np.uint8).astype(np.float32).reshape(height, width, -1) / np.float32(255)
    # a Caffe checkpoint's input (pretrainedmodels' TransformImage): BGR, then back to 0-255
    if cfg.input_space == "BGR":
        x = x[..., ::-1]
    if cfg.input_range[1] == 255:
        x = x * np.float32(255)
    mean, std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
    x = (x - mean) / std  # float32 throughout, the order torchvision's Normalize uses
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(image: ImageLike | Sequence[ImageLike], cfg: str | PretrainedCfg = "seresnet50.a1_in1k") -> np.ndarray:
    """An image (path or PIL image), or a list of them -> an (N, 3, H, W) float32 NCHW array.

    ``cfg``: a pretrained tag (``"legacy_seresnet50.in1k"``), a model name (its default
    tag, see :func:`se_multi.pretrained.default_tag`) or a :class:`PretrainedCfg`.
    """
    config = get_config(cfg)
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images:
        raise ValueError("preprocess: expected at least one image; got an empty list")
    return np.stack([transform(_as_rgb(im), config, _source(im)) for im in images])


def _source(image: ImageLike) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else "image"


class _CallableModule(type(sys.modules[__name__])):
    """``se_multi.preprocess`` is both this module and the public function (lazy attribute in
    ``se_multi/__init__.py``). Once anything imports this module, Python binds the *module*
    as ``se_multi.preprocess``, shadowing the lazy function; making the module callable keeps
    ``se_multi.preprocess(image, tag)`` working whichever of the two the name refers to."""

    def __call__(self, image, cfg="seresnet50.a1_in1k"):
        return preprocess(image, cfg)


sys.modules[__name__].__class__ = _CallableModule
