"""A model's default int8 calibration data: the embedded default that calibrates a model when no
images are given (``dtype="int8"`` on ``openvino``/``onnxruntime``, ``se-multi quantize``,
``bench``/``predict --dtype int8``).

:func:`synthetic_images`: seeded random images (smooth random colour fields with pixel noise)
through the model's own preprocessing. :class:`DefaultCalibration` is the callable that
:class:`se_multi.models.Model` gives its bound module as ``module.calibration_default``
(:func:`se_multi.models.create_model` with the weights' preprocessing): the int8 adapter (:mod:`se_multi.backends.int8`) calls it, so the
adapter never preprocesses an image. Every use warns (:class:`CalibrationWarning`) that real images
from the deployment's own data calibrate better. Images are :mod:`se_multi.quantize`'s business.

It sits with the preprocessing (it imports only :mod:`se_multi.preprocess` and
:mod:`se_multi.pretrained`), below the models.
"""

from __future__ import annotations

import warnings

import numpy as np

#: calibration images used when not told (the issue's default; or all images given, when fewer).
#: It is slow: SE-ResNet-50 on ``openvino`` (NNCF's statistics, then its accurate bias correction)
#: took 166 s of CPU time, 13.5 min wall on the loaded 2-core AMD EPYC on 2026-12-02; the commands
#: that quantize implicitly (``bench``/``predict --dtype int8``) say so on stderr and take ``--calibration``
DEFAULT_SAMPLES = 300


class CalibrationWarning(UserWarning):
    """The embedded calibration default is in use: real images calibrate better."""


def synthetic_images(count: int, cfg, seed: int = 0, start: int = 0) -> list[np.ndarray]:
    """The embedded calibration default: ``count`` seeded RGB images (image ``i`` from
    ``PCG64([seed, 2_000_000 + start + i])``: a random ``g x g`` grid of colours, ``g`` in 2..16,
    upsampled bicubically to 256x256, plus Gaussian pixel noise of sd 8), each through the model's
    own preprocessing ``cfg`` (:func:`se_multi.preprocess.transform`), as (1, 3, H, W) float32."""
    from PIL import Image

    from se_multi.preprocess import transform

    out = []
    for i in range(start, start + count):
        rng = np.random.Generator(np.random.PCG64([seed, 2_000_000 + i]))
        g = int(rng.integers(2, 17))
        grid = Image.fromarray(rng.integers(0, 256, (g, g, 3), dtype=np.uint8), "RGB")
        smooth = np.asarray(grid.resize((256, 256), Image.Resampling.BICUBIC), np.float64)
        pixels = np.clip(smooth + rng.normal(0.0, 8.0, smooth.shape), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(transform(Image.fromarray(pixels, "RGB"), cfg, f"synthetic[{i}]")[None],
                                        dtype=np.float32))
    return out


def describe(count: int, cfg, seed: int = 0) -> str:
    return (f"{count} seeded synthetic images (smooth random colour fields with pixel noise, seed {seed}) "
            f"through the {cfg.tag} preprocessing")


def warn_default(description: str, stacklevel: int = 3) -> None:
    warnings.warn(f"calibrating on the embedded default ({description}); real images from the deployment's own "
                  "data calibrate better", CalibrationWarning, stacklevel=stacklevel)


class DefaultCalibration:
    """``module.calibration_default``: ``(count=None) -> arrays``, :func:`synthetic_images` through
    the preprocessing of the model ``model_name`` with ``weights`` (a hub id's tag, else the model's
    default; ``count`` default :data:`DEFAULT_SAMPLES`), with a :class:`CalibrationWarning`. Plain
    data: it pickles with the module."""

    def __init__(self, model_name: str, weights: str | None = None, seed: int = 0):
        self.model_name, self.weights, self.seed = model_name, weights, seed

    def __call__(self, count: int | None = None) -> list[np.ndarray]:
        from se_multi.pretrained import get_config, tag_from_weights

        n = DEFAULT_SAMPLES if count is None else int(count)
        cfg = get_config(tag_from_weights(self.weights) or self.model_name)
        warn_default(describe(n, cfg, self.seed))
        return synthetic_images(n, cfg, self.seed)

    def __repr__(self) -> str:
        return f"DefaultCalibration({self.model_name!r}, weights={self.weights!r}, seed={self.seed})"
