"""``se-multi predict`` end to end (seeded weights, NumPy backend, small models) and every bad input:
a one-line CLI error with exit code 2, and a clear exception from the Python API."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from se_multi.cli import main
from se_multi.init import recipe_state
from se_multi.models import build_model, create_model
from conftest import require_backend
from se_multi.predict import mask_file, predict, source_key
from se_multi.preprocess import ImageError, preprocess
from se_multi.pretrained import imagenet_labels

CLASSIFIER = "mobilenetv3_large_100"  # small and fast on NumPy (~0.1 s per image)
OTHER = "mobilenetv3_small_100"
SEGMENTER = "unet_se_resnet50_scse"


def _softmax64(logits):
    # written out independently of se_multi.predict.softmax
    e = np.exp(np.asarray(logits, np.float64))
    return e / e.sum(axis=-1, keepdims=True)


def _run(capsys, *argv):
    rc = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two generated photos-ish PNGs (gradients + noise), different aspect ratios."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(320, 240), (200, 300)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        path = root / f"photo{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _expected_topk(model_name, image, k, tag=None, **create):
    x = preprocess(image, tag or model_name)
    probs = _softmax64(create_model(model_name, backend="numpy", dtype="float64", **create).predict_numpy(x))[0]
    order = np.argsort(-probs)[:k]
    return [int(i) for i in order], probs[order]


# ------------------------------------------------------------------------------ end to end
def test_predict_table_with_seeded_weights(capsys, images):
    rc, out, err = _run(capsys, images[0], "--model", CLASSIFIER, "--backend", "numpy", "--topk", "3")
    assert rc == 0
    assert "untrained seeded weights" in err and err.count("\n") == 1
    classes, _ = _expected_topk(CLASSIFIER, images[0], 3)
    assert str(images[0]) in out and "mobilenetv3_large_100.ra_in1k" in out
    for k in classes:
        assert imagenet_labels()[k] in out


def test_predict_json_matches_float64_reference(capsys, images):
    rc, out, _ = _run(capsys, *images, "--model", CLASSIFIER, "--backend", "numpy", "--topk", "5", "--json")
    assert rc == 0
    report = json.loads(out)
    assert report["model"] == CLASSIFIER and report["seeded_weights"] is True and report["backend"] == "numpy"
    assert [r["image"] for r in report["results"]] == [str(p) for p in images]
    for image, result in zip(images, report["results"]):
        classes, probs = _expected_topk(CLASSIFIER, image, 5)
        assert [t["class"] for t in result["topk"]] == classes
        assert [t["rank"] for t in result["topk"]] == [1, 2, 3, 4, 5]
        assert np.allclose([t["prob"] for t in result["topk"]], probs, rtol=1e-4, atol=1e-7)
        assert all(t["label"] == imagenet_labels()[t["class"]] for t in result["topk"])


def test_predict_on_a_converted_checkpoint(capsys, images, tmp_path):
    """Weights from a file (the seeded recipe with another seed, in the native layout) give
    the same predictions as the same weights created in memory."""
    from safetensors.numpy import save_file

    specs = build_model(CLASSIFIER).param_specs()
    ckpt = tmp_path / "mnv3.safetensors"
    save_file(recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=3), str(ckpt))
    rc, out, err = _run(capsys, images[1], "--model", CLASSIFIER, "--weights", ckpt, "--backend", "numpy", "--json")
    assert rc == 0 and "seeded" not in err
    report = json.loads(out)
    assert report["seeded_weights"] is False and report["weights"] == str(ckpt)
    classes, probs = _expected_topk(CLASSIFIER, images[1], 5, seed=3)
    assert [t["class"] for t in report["results"][0]["topk"]] == classes
    assert np.allclose([t["prob"] for t in report["results"][0]["topk"]], probs, rtol=1e-4)


def test_npy_input_is_used_as_preprocessed_batch(capsys, images, tmp_path):
    x = preprocess(images, CLASSIFIER)
    np.save(tmp_path / "batch.npy", x)
    rc, out, _ = _run(capsys, tmp_path / "batch.npy", "--model", CLASSIFIER, "--backend", "numpy", "--json")
    assert rc == 0
    results = json.loads(out)["results"]
    assert [r["image"] for r in results] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(2)]
    for image, result in zip(images, results):
        assert [t["class"] for t in result["topk"]] == _expected_topk(CLASSIFIER, image, 5)[0]


def test_python_api_predict(images):
    (result,) = predict(str(images[0]), model=CLASSIFIER, backend="numpy", topk=2)
    assert [k for k, _, _ in result.topk] == _expected_topk(CLASSIFIER, images[0], 2)[0]
    assert not result.is_segmentation


def test_torch_backend_gives_the_same_top5(capsys, images):
    require_backend("torch")
    rc, out, _ = _run(capsys, images[0], "--model", CLASSIFIER, "--backend", "torch", "--json")
    assert rc == 0
    assert [t["class"] for t in json.loads(out)["results"][0]["topk"]] == _expected_topk(CLASSIFIER, images[0], 5)[0]


@pytest.mark.parametrize("fixture", ["mobilenetv3_large_100", "torchvision.mobilenet_v3_large"])
def test_predict_on_a_peer_checkpoint_equals_the_peer(capsys, tmp_path, fixture):
    """A checkpoint in the peer's own layout (timm / torchvision) and the fixture's input as .npy:
    the top-5 equals the softmax of the logits timm / torchvision computed (float64)."""
    from _parity import FIXTURE_MODELS, expected, write_peer_checkpoint

    peer = expected(fixture)
    np.save(tmp_path / "x.npy", peer["x"])
    rc, out, _ = _run(capsys, tmp_path / "x.npy", "--model", FIXTURE_MODELS[fixture], "--weights",
                      write_peer_checkpoint(fixture, tmp_path), "--backend", "numpy", "--dtype", "float64", "--json")
    assert rc == 0
    for result, logits in zip(json.loads(out)["results"], peer["logits"]):
        probs = _softmax64(logits)
        order = np.argsort(-probs)[:5]
        assert [t["class"] for t in result["topk"]] == order.tolist()
        assert np.allclose([t["prob"] for t in result["topk"]], probs[order], rtol=1e-6)


# ------------------------------------------------------------------------------ segmentation
def test_segmentation_mask_png(capsys, images, tmp_path):
    mask = tmp_path / mask_file(source_key(images[0]))  # --output-dir names each mask after its image's identity
    rc, out, _ = _run(capsys, images[0], "--model", SEGMENTER, "--backend", "numpy", "--output-dir", tmp_path, "--json")
    assert rc == 0
    result = json.loads(out)["results"][0]
    x = preprocess(images[0], SEGMENTER)
    expected = create_model(SEGMENTER, backend="numpy").predict_numpy(x)[0].argmax(axis=0)
    with Image.open(mask) as img:
        assert img.mode == "P" and img.size == (x.shape[3], x.shape[2])  # sized like the network input
        written = np.array(img)
    assert result["mask"] == str(mask) and result["mask_size"] == list(x.shape[2:])
    assert np.array_equal(written, expected)  # the same model and input: the argmax exactly
    fractions = np.bincount(expected.ravel(), minlength=21) / expected.size
    listed = [t["class"] for t in result["topk"]]
    assert listed == [int(k) for k in np.argsort(-fractions, kind="stable")[:len(listed)] if fractions[k] > 0]
    assert np.allclose([t["fraction"] for t in result["topk"]], fractions[listed])


def test_segmentation_masks_for_several_images(capsys, images, tmp_path):
    # a 160x160 config keeps this fast; each mask is named after its image
    rc, out, _ = _run(capsys, *images, "--model", SEGMENTER, "--backend", "numpy", "--pretrained-cfg",
                      "seresnet50.a3_in1k", "--output-dir", tmp_path / "masks", "--batch-size", "2")
    assert rc == 0
    for p in images:
        with Image.open(tmp_path / "masks" / mask_file(source_key(p))) as img:
            assert img.size == (160, 160)


def test_segmentation_mask_equals_smp_argmax(capsys, tmp_path):
    """The smp U-Net fixture: the mask written from the peer-layout checkpoint is the argmax of smp's logits."""
    from _parity import expected, write_peer_checkpoint

    peer = expected("smp.unet_se_resnet50_scse")
    np.save(tmp_path / "x.npy", peer["x"])
    rc, _, _ = _run(capsys, tmp_path / "x.npy", "--model", SEGMENTER, "--weights",
                    write_peer_checkpoint("smp.unet_se_resnet50_scse", tmp_path), "--backend", "numpy",
                    "--dtype", "float64", "--output-dir", tmp_path)
    assert rc == 0
    with Image.open(tmp_path / mask_file(source_key(tmp_path / "x.npy"))) as img:
        assert np.array_equal(np.array(img), peer["logits"][0].argmax(axis=0))


# ------------------------------------------------------------------------------ bad inputs
def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


def _x(shape=(1, 3, 32, 32), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _with(value):
    x = _x()
    x[0, 1, 2, 3] = value
    return x


def _truncated(tmp_path, images):
    data = images[0].read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 3])
    return path


def _text(tmp_path, name):
    path = tmp_path / name
    path.write_text("not an image\n")
    return path


def _other_models_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    specs = build_model(OTHER).param_specs()
    path = tmp_path / "small.safetensors"
    save_file(recipe_state((k, s.shape, s.kind) for k, s in specs.items()), str(path))
    return path


# An input that cannot be read or run is one error row, named by its path; the run goes on and
# exits 1. (id, argv builder (tmp_path, images) -> CLI args, expected error)
BAD_IMAGE = [
    ("missing-file", lambda t, im: [t / "nope.png"], "image not found: .*nope.png"),
    ("not-an-image", lambda t, im: [_text(t, "notes.png")], "notes.png: not an image file"),
    ("corrupt-image", lambda t, im: [_truncated(t, im)], "truncated.png: cannot decode image"),
    ("unreadable-npy", lambda t, im: [_text(t, "x.npy")], "x.npy: cannot read as a NumPy"),
    ("wrong-channels", lambda t, im: [_npy(t, "c4.npy", _x((1, 4, 32, 32)))], "expected NCHW with 3 channels"),
    ("wrong-rank", lambda t, im: [_npy(t, "r3.npy", _x((3, 32, 32)))], "expected a 4-D NCHW array"),
    ("integer-dtype", lambda t, im: [_npy(t, "u8.npy", _x(dtype=np.float32).astype(np.uint8))],
     r"expected a floating-point array \(bfloat16, float16, float32 or float64\); got dtype uint8"),
    ("nhwc", lambda t, im: [_npy(t, "nhwc.npy", _x((1, 32, 32, 3)))], "looks NHWC"),
    ("nan", lambda t, im: [_npy(t, "nan.npy", _with(np.nan))], "NaN or Inf"),
    ("inf", lambda t, im: [_npy(t, "inf.npy", _with(np.inf))], "NaN or Inf"),
]
# A bad command line, model, tag, checkpoint or output: one line, exit 3, before any image runs.
BAD_CLI = [
    ("unknown-model", lambda t, im: [im[0], "--model", "seresnet5O"],
     "unknown model 'seresnet5O'; known models: .*seresnet50"),
    ("unknown-tag", lambda t, im: [im[0], "--pretrained-cfg", "seresnet50.b9_in1k"],
     "unknown pretrained config 'seresnet50.b9_in1k'; known tags: .*seresnet50.a1_in1k"),
    ("bad-topk", lambda t, im: [im[0], "--topk", "0"], "--topk must be >= 1"),
    ("bad-batch-size", lambda t, im: [im[0], "--batch-size", "0"], "--batch-size must be >= 1"),
    ("mask-as-output", lambda t, im: [im[0], "--output", t / "m.png"],
     r"results are written as .jsonl, .csv, .parquet \(segmentation masks go to --output-dir DIR\)"),
    ("output-dir-for-classifier", lambda t, im: [im[0], "--output-dir", t / "masks"], "segmentation class maps"),
    ("missing-checkpoint", lambda t, im: [im[0], "--weights", t / "none.safetensors"], "checkpoint not found"),
    ("other-models-checkpoint", lambda t, im: [im[0], "--model", "mobilenetv1_100",
                                               "--weights", _other_models_checkpoint(t)],
     "does not match the model"),
    ("empty-folder", lambda t, im: [(t / "empty").mkdir() or t / "empty"], "no images in this folder"),
    ("glob-without-match", lambda t, im: [t / "*.jpeg"], "no image files match"),
    ("missing-list", lambda t, im: [f"@{t / 'list.txt'}"], "cannot read the list of images"),
]


@pytest.mark.parametrize("make_args, message", [b[1:] for b in BAD_IMAGE], ids=[b[0] for b in BAD_IMAGE])
def test_a_bad_input_is_an_error_row_and_exit_1(capsys, tmp_path, images, make_args, message):
    argv = [*make_args(tmp_path, images), images[0]]  # the good image after it still runs
    rc, out, err = _run(capsys, *argv, "--model", CLASSIFIER, "--backend", "numpy", "--json")
    assert rc == 1, err
    results = json.loads(out)["results"]
    assert len(results) == 2 and "topk" in results[1] and set(results[0]) == {"image", "error"}
    assert results[0]["image"] == str(argv[0]) and re.search(message, results[0]["error"]), results[0]
    assert "se-multi predict: 2 images, 1 failed" in err and "Traceback" not in err


@pytest.mark.parametrize("make_args, message", [b[1:] for b in BAD_CLI], ids=[b[0] for b in BAD_CLI])
def test_bad_input_is_one_line_cli_error(capsys, tmp_path, images, make_args, message):
    argv = make_args(tmp_path, images)
    if "--model" not in map(str, argv):
        argv += ["--model", CLASSIFIER]
    rc, out, err = _run(capsys, *argv, "--backend", "numpy")
    assert rc == 3, err  # bad input
    assert out == ""
    assert err.startswith("se-multi predict: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


# Python API: the same cases raise ValueError / TypeError / OSError with the same messages
@pytest.mark.parametrize("x, exc, message", [
    (_x((1, 4, 32, 32)), ValueError, "expected NCHW with 3 channels"),
    (_x((3, 32, 32)), ValueError, "expected a 4-D NCHW array"),
    (_x().astype(np.int64), TypeError, r"expected a floating-point array \(bfloat16, float16, float32 or float64\); got dtype int64"),
    (_x((1, 32, 32, 3)), ValueError, "looks NHWC"),
    (_with(np.nan), ValueError, "NaN or Inf"),
    (_with(-np.inf), ValueError, "NaN or Inf"),
], ids=["wrong-channels", "wrong-rank", "integer-dtype", "nhwc", "nan", "inf"])
def test_bad_tensor_raises_from_the_model(x, exc, message):
    with pytest.raises(exc, match=message):
        create_model(OTHER, backend="numpy")(x)


def test_api_bad_names_and_files(tmp_path, images):
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: "):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: "):
        predict(images[0], model="nope")
    with pytest.raises(ValueError, match="unknown pretrained config"):
        predict(images[0], model=CLASSIFIER, pretrained_cfg="nope.tag", backend="numpy")
    with pytest.raises(ImageError, match="not an image file"):
        predict(_text(tmp_path, "a.jpg"), model=CLASSIFIER, backend="numpy")
    with pytest.raises(ValueError, match="does not match the model"):
        create_model("mobilenetv1_100", weights=str(_other_models_checkpoint(tmp_path)), backend="numpy")
