"""Preprocessing equals timm's eval transform (fixtures made with timm 1.0.31 + torchvision 0.28),
pretrained configs equal the data configs timm resolved, and bad images fail with the file named."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import se_multi
from se_multi.preprocess import ImageError, preprocess
from se_multi.pretrained import (DEFAULT_TAGS, PRETRAINED_CFGS, default_tag, get_config, imagenet_labels,
                                 tag_from_weights)

DATA = Path(__file__).parent / "data" / "preprocess"
CASES = json.loads((DATA / "manifest.json").read_text())
IMAGE0 = DATA / "image0_500x375.png"
TOL = 1e-6


def _case_id(case):
    return f"{case['image'].split('_')[0]}-{case['pretrained_cfg']}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_preprocess_matches_timm_eval_transform(case):
    x = preprocess(DATA / case["image"], case["pretrained_cfg"])
    expected = np.load(DATA / case["expected"])
    assert x.shape == (1, *expected.shape) and x.dtype == np.float32
    assert np.abs(x[0] - expected).max() <= TOL


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pretrained_config_matches_timm_data_config(case):
    assert get_config(case["pretrained_cfg"]).data_config() == case["data_config"]


def test_public_entry_point_and_model_name_use_the_default_tag():
    case = next(c for c in CASES if c["pretrained_cfg"] == "legacy_seresnet50.in1k")
    x = se_multi.preprocess(str(DATA / case["image"]), "legacy_seresnet50")  # model name -> its default tag
    assert np.abs(x[0] - np.load(DATA / case["expected"])).max() <= TOL


def test_pil_image_and_batch_of_paths():
    cases = [c for c in CASES if c["pretrained_cfg"] == "seresnet50.a1_in1k"]
    expected = np.stack([np.load(DATA / c["expected"]) for c in cases])
    with Image.open(DATA / cases[0]["image"]) as img:
        single = preprocess(img, "seresnet50.a1_in1k")
    batch = preprocess([DATA / c["image"] for c in cases], "seresnet50.a1_in1k")
    assert batch.shape == (len(cases), 3, 224, 224)
    assert np.abs(batch - expected).max() <= TOL
    assert np.abs(single[0] - expected[0]).max() <= TOL


def test_rgba_drops_alpha_as_timm_does(tmp_path):
    # timm converts with Image.convert("RGB"), which discards alpha: the fixture must come out unchanged
    case = next(c for c in CASES if c["image"] == IMAGE0.name and c["pretrained_cfg"] == "seresnet50.a1_in1k")
    with Image.open(IMAGE0) as img:
        rgba = img.convert("RGB")
    alpha = np.random.default_rng(0).integers(0, 256, size=rgba.size[::-1], dtype=np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    for source in (rgba, path):
        x = preprocess(source, "seresnet50.a1_in1k")
        assert np.abs(x[0] - np.load(DATA / case["expected"])).max() <= TOL


@pytest.mark.parametrize("mode", ["L", "LA", "P"])
def test_grayscale_and_palette_images_become_three_channels(mode):
    with Image.open(IMAGE0) as img:
        converted = img.convert(mode)
    x = preprocess(converted, "legacy_seresnet50.in1k")
    cfg = get_config("legacy_seresnet50.in1k")
    assert x.shape == (1, 3, 224, 224)
    pixels = x[0] * np.float32(cfg.std)[:, None, None] + np.float32(cfg.mean)[:, None, None]
    if mode != "P":  # gray replicated into R, G and B
        assert np.abs(pixels[0] - pixels[1]).max() < 1e-5 and np.abs(pixels[0] - pixels[2]).max() < 1e-5
    # same as converting to RGB first (what timm's loader does)
    assert np.array_equal(x, preprocess(converted.convert("RGB"), "legacy_seresnet50.in1k"))


def test_unknown_tag_lists_known_tags():
    with pytest.raises(ValueError, match="unknown pretrained config 'seresnet50.nope'.*seresnet50.a1_in1k"):
        preprocess(IMAGE0, "seresnet50.nope")
    with pytest.raises(ValueError, match="known tags"):
        get_config("not_a_model")


def test_default_tags_and_hub_ids():
    assert default_tag("seresnet50") == "seresnet50.a1_in1k"
    assert get_config("seresnet50") is PRETRAINED_CFGS["seresnet50.a1_in1k"]
    assert get_config("timm/legacy_seresnet50.in1k").tag == "legacy_seresnet50.in1k"
    assert PRETRAINED_CFGS["seresnet50.a2_in1k"].hub_id == "timm/seresnet50.a2_in1k"
    assert tag_from_weights("timm/seresnet50.a3_in1k") == "seresnet50.a3_in1k"
    assert tag_from_weights("ckpt/model.safetensors") is None
    with pytest.raises(ValueError, match="no pretrained config for model 'nope'"):
        default_tag("nope")
    for cfg in PRETRAINED_CFGS.values():
        assert cfg.hub_id in (None, f"timm/{cfg.tag}")


def test_every_model_has_a_default_config_and_every_tag_a_model():
    models = set(se_multi.list_models())
    missing = sorted(models - set(DEFAULT_TAGS))
    assert not missing, f"models without a default pretrained config: {missing}"
    for tag in DEFAULT_TAGS.values():
        assert tag in PRETRAINED_CFGS
    unknown = sorted({c.model_name for c in PRETRAINED_CFGS.values()} - models)
    if models >= set(DEFAULT_TAGS):  # every family has landed: the table must name real models only
        assert not unknown, f"pretrained configs for models se_multi lacks: {unknown}"


def test_imagenet_labels_are_the_ilsvrc2012_classes():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench, Tinca tinca"
    assert labels[281] == "tabby, tabby cat"
    assert labels[999] == "toilet tissue, toilet paper, bathroom tissue"


# ------------------------------------------------------------------------------ bad images
def _truncated_png(tmp_path):
    data = IMAGE0.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_png(tmp_path):
    # a valid header and IHDR followed by an IDAT chunk of garbage (CRC correct, so only decoding fails)
    data = IMAGE0.read_bytes()
    idat = data.index(b"IDAT") - 4
    junk = bytes(range(256)) * 8
    chunk = len(junk).to_bytes(4, "big") + b"IDAT" + junk + zlib.crc32(b"IDAT" + junk).to_bytes(4, "big")
    path = tmp_path / "corrupt.png"
    path.write_bytes(data[:idat] + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return path


def _text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.png", "image not found"),
    (lambda tmp: tmp, "is a directory"),
    (_text_file, "not an image file"),
    (_truncated_png, "cannot decode image"),
    (_corrupt_png, "cannot decode image"),
], ids=["missing", "directory", "not-an-image", "truncated", "corrupt"])
def test_bad_image_files_raise_oserror_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as info:
        preprocess(path, "seresnet50.a1_in1k")
    assert isinstance(info.value, OSError) and str(path) in str(info.value)


def test_arrays_and_empty_lists_are_rejected():
    with pytest.raises(TypeError, match="expected an image path or a PIL image; got ndarray"):
        preprocess(np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one image"):
        preprocess([])
