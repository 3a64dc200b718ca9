"""Inference over folders, globs and lists: batched, prefetched, streamed to JSONL/CSV/Parquet,
resumable, per-image errors; the same rows on a local Ray cluster."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from se_multi import predict as P
from se_multi.cli import main
from se_multi.results import read_results

MODEL = "mobilenetv3_small_100"  # small and fast on NumPy
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """30 generated images in nested folders (two share a file name), plus a non-image file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(30):
        folder = root / ("a" if i < 12 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(120, 300)), int(rng.integers(120, 300))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = "same.png" if i in (0, 20) else f"img{i:02d}.{'jpg' if i % 3 else 'png'}"
        Image.fromarray(pixels).save(folder / name)
    (root / "a" / "notes.txt").write_text("not an image")
    return root


def _run(capsys, *argv):
    rc = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------ sources
def test_folders_globs_and_lists_expand_in_order(photos, tmp_path):
    every = P.expand_sources(photos)
    assert len(every) == 30 and every == sorted(every) and not any(p.endswith(".txt") for p in every)
    jpgs = P.expand_sources(str(photos / "**" / "*.jpg"))
    assert jpgs and all(p.endswith(".jpg") for p in jpgs) and len(jpgs) == sum(p.endswith(".jpg") for p in every)
    listing = photos / "list.txt"
    listing.write_text("# my photos\na/img01.jpg\n\nb/c\n/abs/missing.png\n")
    listed = P.expand_sources([f"@{listing}", str(photos / "a" / "img01.jpg")])  # each path once
    assert listed[0] == str(photos / "a" / "img01.jpg") and listed[-1] == "/abs/missing.png"
    assert len(listed) == 1 + 18 + 1


def test_mask_names_are_unique_and_depend_on_the_image_alone(photos, tmp_path):
    paths = P.expand_sources(photos)
    names = {p: P.mask_file(P.source_key(p)) for p in paths}
    assert len(set(names.values())) == len(paths)
    assert all(names[p].startswith("same-") for p in paths if p.endswith("same.png"))
    # the name is the image's, however it is spelled or reached
    link = tmp_path / "link.png"
    link.symlink_to(paths[0])
    assert P.mask_file(P.source_key(link)) == names[paths[0]]
    # images of an .npy batch: one name each, with the index
    batch = [P.mask_file(P.unit_key(P.source_key("/d/x.npy"), i)) for i in range(3)]
    assert len(set(batch)) == 3 and [n[:4] for n in batch] == ["x_0-", "x_1-", "x_2-"]


# ------------------------------------------------------------------------------ batching and streaming
def test_batches_give_the_same_predictions_as_one_by_one(photos):
    paths = P.expand_sources(photos)[:10]
    one = list(P.predict_batch(paths, MODEL, backend="numpy", batch_size=1, topk=3))
    eight = list(P.predict_batch(paths, MODEL, backend="numpy", batch_size=8, topk=3))
    assert [r.source for r in one] == [r.source for r in eight] == paths
    for a, b in zip(one, eight):
        assert [k for k, _, _ in a.topk] == [k for k, _, _ in b.topk]
        np.testing.assert_allclose([p for _, _, p in a.topk], [p for _, _, p in b.topk], rtol=1e-4)


def test_decoding_runs_ahead_of_the_model_in_threads_bounded(photos, monkeypatch):
    """While the model runs batch k, the pool is already decoding batch k+1 -- and never more than
    batch_size * (prefetch + 1) images ahead."""
    paths = P.expand_sources(photos)
    events, in_model = [], threading.Event()
    real_load = P.load_input

    def load(path, cfg):
        events.append(("load", path, threading.current_thread().name, in_model.is_set(), time.perf_counter()))
        return real_load(path, cfg)

    class SlowModel:
        name, in_chans = MODEL, 3

        def predict_numpy(self, x):
            in_model.set()
            events.append(("model", x.shape[0], None, None, time.perf_counter()))
            time.sleep(0.05)
            in_model.clear()
            return np.zeros((x.shape[0], 1000))

    monkeypatch.setattr(P, "load_input", load)
    runner = P.Runner(SlowModel(), P.resolve_config(MODEL), topk=1)
    loads_before_first_call = 0
    for batch, errors in P.iter_batches(paths, runner.cfg, batch_size=4, threads=2):
        if not any(e[0] == "model" for e in events):
            loads_before_first_call = sum(e[0] == "load" for e in events)
        runner.run(batch)
    loads = [e for e in events if e[0] == "load"]
    assert len(loads) == 30 and all(e[2].startswith("se_multi-decode") for e in loads)
    assert any(e[3] for e in loads), "no image was decoded while the model was running"
    assert loads_before_first_call <= 4 * (P.PREFETCH_BATCHES + 1)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_output_formats_stream_the_same_results(photos, tmp_path, capsys, suffix):
    out = tmp_path / f"results{suffix}"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    rc, stdout, err = _run(capsys, photos / "a", bad, "--model", MODEL, "--backend", "numpy", "--topk", "3",
                           "--batch-size", "4", "--output", out)
    assert rc == 1 and stdout.startswith(f"{MODEL}") is False
    assert "se-multi predict: 13 images, 1 failed" in err
    rows = read_results(out)
    reference = {r.source: r for r in P.predict_batch(photos / "a", MODEL, backend="numpy", topk=3)}
    if suffix == ".jsonl":
        assert len(rows) == 13
        by_image = {r["image"]: r for r in rows}
        assert by_image[str(bad)] == {"image": str(bad), "error": by_image[str(bad)]["error"]}
        assert "broken.png: not an image file Pillow can read" in by_image[str(bad)]["error"]
        for image, ref in reference.items():
            assert [t["class"] for t in by_image[image]["topk"]] == [k for k, _, _ in ref.topk]
            assert set(by_image[image]["topk"][0]) == {"rank", "class", "label", "prob"}
    else:
        assert len(rows) == 12 * 3 + 1
        errors = [r for r in rows if r["error"]]
        assert len(errors) == 1 and errors[0]["image"] == str(bad)
        for image, ref in reference.items():
            mine = sorted((int(r["rank"]), int(r["class"])) for r in rows if r["image"] == image)
            assert [k for _, k in mine] == [k for k, _, _ in ref.topk]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_rerun_skips_the_images_already_there(photos, tmp_path, capsys, suffix):
    out = tmp_path / f"results{suffix}"
    first = P.expand_sources(photos)[:7]
    assert _run(capsys, *first, "--model", MODEL, "--backend", "numpy", "--output", out)[0] == 0
    if suffix == ".jsonl":  # an interrupted write: a torn last line is dropped, its image redone
        text = out.read_text()
        out.write_text(text + '{"image": "/torn/line.png", "topk": [{"ra')
    rc, _, err = _run(capsys, photos, "--model", MODEL, "--backend", "numpy", "--output", out)
    assert rc == 0 and "23 images, 0 failed, 7 already in" in err
    images = [r["image"] for r in read_results(out)]
    assert sorted(set(images)) == sorted(P.expand_sources(photos))
    if suffix == ".jsonl":
        assert len(images) == 30  # each image once


def test_segmentation_rows_and_masks(photos, tmp_path, capsys):
    out, masks = tmp_path / "seg.jsonl", tmp_path / "masks"
    sources = [p for p in P.expand_sources(photos) if p.endswith("same.png")]
    rc, _, _ = _run(capsys, *sources, "--model", "unet_se_resnet50_scse", "--backend", "numpy",
                    "--pretrained-cfg", "seresnet50.a3_in1k", "--output", out, "--output-dir", masks)
    assert rc == 0
    rows = read_results(out)
    assert len({r["mask"] for r in rows}) == 2 and all(Path(r["mask"]).parent == masks for r in rows)
    for r in rows:
        with Image.open(r["mask"]) as img:
            assert img.size == (160, 160)
        assert set(r["topk"][0]) == {"rank", "class", "label", "fraction"}


def test_no_progress_bar_when_not_a_terminal_and_quiet_is_quiet(photos, tmp_path, capsys):
    rc, _, err = _run(capsys, photos / "a", "--model", MODEL, "--backend", "numpy", "--output", tmp_path / "r.jsonl")
    assert rc == 0 and err.count("\n") == 2 and "img/s" not in err  # the seeded-weights note and the summary
    rc, _, err = _run(capsys, photos / "a", "--model", MODEL, "--backend", "numpy", "--quiet",
                      "--output", tmp_path / "q.jsonl")
    assert rc == 0 and "images/s" not in err


def test_python_api_yields_as_batches_complete(photos):
    results = P.predict_batch(photos / "b", MODEL, backend="numpy", batch_size=4, topk=2)
    first = next(results)  # a generator: the first batch is out before the rest is computed
    assert first.ok and len(first.topk) == 2
    assert len([first, *results]) == 18


def test_a_corrupt_image_in_a_batch_fails_alone(photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    sources = [*P.expand_sources(photos / "a")[:3], str(bad), *P.expand_sources(photos / "a")[3:6]]
    results = list(P.predict_batch(sources, MODEL, backend="numpy", batch_size=4))
    assert [r.source for r in results if not r.ok] == [str(bad)]
    assert sorted(r.source for r in results) == sorted(sources)


# ------------------------------------------------------------------------------ Ray
def test_actor_cpus_leave_room_for_the_readers():
    from se_multi.ray_predict import actor_cpus

    assert actor_cpus(2, 2) == 0.5 and actor_cpus(2, 1) == 1.0 and actor_cpus(16, 4) == 1.0
    assert actor_cpus(1, 4) == 0.25


@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time: ray.init() joins one already running
def test_ray_local_cluster_gives_the_single_process_rows(photos, tmp_path):
    """A local Ray with 2 actors on the 30 images: the same rows as one process (in its own
    interpreter: Ray starts and stops worker processes)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'se-multi[ray]'")
    single, ray_out = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    corrupt, missing = tmp_path / "corrupt.jpg", tmp_path / "missing.png"
    corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
    base = [sys.executable, "-m", "se_multi", "predict", str(photos), str(corrupt), str(missing), "--model", MODEL,
            "--backend", "numpy", "--topk", "3", "--batch-size", "4", "--quiet"]
    for extra, out in (([], single), (["--ray", "--workers", "2"], ray_out)):
        proc = subprocess.run([*base, *extra, "--output", str(out)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600)
        assert proc.returncode == 1, proc.stderr[-3000:]  # two images failed, the rest ran
        assert "32 images, 2 failed" in proc.stderr
    one = {r["image"]: r for r in read_results(single)}
    many = {r["image"]: r for r in read_results(ray_out)}
    assert set(one) == set(many) and len(one) == 32
    for bad in (corrupt, missing):
        assert many[str(bad)] == one[str(bad)] and "error" in one[str(bad)]
    for image, r in one.items():
        if "error" in r:
            continue
        assert [t["class"] for t in many[image]["topk"]] == [t["class"] for t in r["topk"]]
        np.testing.assert_allclose([t["prob"] for t in many[image]["topk"]], [t["prob"] for t in r["topk"]],
                                   rtol=1e-5)


def test_a_bytes_path_is_one_source_and_other_types_are_refused(photos):
    one = str(P.expand_sources(photos / "a")[0])
    assert P.expand_sources(one.encode()) == [one]  # a bytes path, as os functions take it; not its bytes
    with pytest.raises(TypeError, match="a source must be a path .*; got int"):
        P.expand_sources([one, 3])
    with pytest.raises(TypeError, match="sources must be a path or an iterable of paths; got float"):
        P.expand_sources(1.5)
