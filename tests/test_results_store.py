"""``predict --output`` under failure: every image exactly once and complete, whatever stops a run.

Fault injection in real child processes (SIGTERM, SIGHUP, SIGINT and SIGKILL mid-run,
``RLIMIT_FSIZE``, two writers at once), truncation of the output and of the store's write-ahead
log at many byte offsets followed by a resume, a resume with each setting changed, path spellings
and symlink loops, names that are not UTF-8, list cycles. The expected rows come from one
uninterrupted run of the same images (``reference``)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from se_multi.cli import main
from se_multi.predict import expand_sources, mask_file, source_key
from se_multi.results import read_results, store_path

MODEL = "mobilenetv3_small_100"  # small and fast on NumPy
TOPK = 3
ROOT = Path(__file__).resolve().parents[1]
FORMATS = (".jsonl", ".csv", ".parquet")
BASE = ("--model", MODEL, "--backend", "numpy", "--topk", str(TOPK), "--quiet")


def _images(folder: Path, n: int, seed: int = 0, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{seed}_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def imgs(tmp_path_factory) -> Path:
    return _images(tmp_path_factory.mktemp("store") / "imgs", 12)


@pytest.fixture(scope="module")
def reference(imgs, tmp_path_factory) -> dict[str, list[tuple[int, int]]]:
    """image -> [(rank, class)] from one uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 0
    return _by_image(out)


def _by_image(out: Path) -> dict[str, list[tuple[int, int]]]:
    """Every image's (rank, class) pairs, checking each image appears once and whole."""
    rows = read_results(out)
    found: dict[str, list[tuple[int, int]]] = {}
    if out.suffix == ".jsonl":
        for r in rows:
            assert r["image"] not in found, f"{r['image']} twice in {out.name}"
            found[r["image"]] = [(t["rank"], t["class"]) for t in r["topk"]]
    else:
        for r in rows:
            found.setdefault(r["image"], []).append((int(r["rank"]), int(r["class"])))
    for image, ranks in found.items():
        assert [k for k, _ in ranks] == list(range(1, TOPK + 1)), f"{image}: ranks {ranks} in {out.name}"
    return found


def _cli(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "se_multi", "predict", *map(str, argv)], capture_output=True,
                          text=True, cwd=kwargs.pop("cwd", ROOT), timeout=kwargs.pop("timeout", 300), **kwargs)


def _start(*argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "se_multi", "predict", *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _images_in(out: Path) -> int:
    try:
        return len(_by_image(out))
    except (OSError, ValueError):
        return 0


def _wait_for(proc: subprocess.Popen, out: Path, images: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _images_in(out) < images:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the run wrote nothing in time"
        time.sleep(0.05)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(("-wal", "-journal")))


def _slow_folder(imgs: Path, tmp_path: Path) -> Path:
    """The 12 images at 1024x1024, so that a run lasts long enough to be hit mid-way on any machine:
    the test acts within 50 ms of seeing one or two images written. zlib level 1: each image decodes
    as slowly as at PNG's default level 6 (what keeps the run going), and encodes in 0.14 s, not 0.66 s."""
    folder = tmp_path / "big"
    folder.mkdir()
    for p in sorted(imgs.iterdir()):
        with Image.open(p) as im:
            im.resize((1024, 1024)).save(folder / p.name, compress_level=1)
    return folder


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("suffix,sig", [(".jsonl", signal.SIGTERM), (".csv", signal.SIGTERM),
                                        (".parquet", signal.SIGTERM), (".parquet", signal.SIGHUP),
                                        (".parquet", signal.SIGINT)])
def test_a_signal_ends_the_run_with_its_rows_kept_and_the_resume_completes_it(imgs, reference, tmp_path, suffix,
                                                                                sig):
    out = tmp_path / f"r{suffix}"
    proc = _start(imgs, *BASE, "--batch-size", "2", "--refresh", "0", "--output", out)
    _wait_for(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    expected_rc = 130 if sig == signal.SIGINT else 128 + sig
    assert proc.returncode in (expected_rc, 0), err  # 0: it finished before the signal came
    if proc.returncode:
        assert err.strip().splitlines()[-1].startswith("se-multi predict: ") and "Traceback" not in err
    kept = _by_image(out)
    assert 2 <= len(kept) and all(kept[i] == reference[i] for i in kept)  # whole images, right rows
    assert _leftovers(tmp_path) == []  # no temporary file, the store's log checkpointed away
    assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 0
    assert _by_image(out) == reference


def test_sigkill_keeps_every_committed_batch_and_a_torn_log_loses_only_whole_batches(imgs, tmp_path):
    """SIGKILL mid-run, then the store's write-ahead log cut at many byte offsets (a power loss
    while it was being written): each resume finds whole images only, and completes the run."""
    out = tmp_path / "r.parquet"
    # 12 images: each of the resumes below recomputes what its cut log lost (36 cost 3x as much)
    big = _slow_folder(imgs, tmp_path)
    proc = _start(big, *BASE, "--batch-size", "2", "--refresh", "0", "--output", out)
    _wait_for(proc, out, 2)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert main(["predict", str(big), *BASE, "--output", str(tmp_path / "whole.jsonl")]) == 0
    reference = _by_image(tmp_path / "whole.jsonl")
    store, wal = store_path(out), Path(f"{store_path(out)}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the committed batches are in the log
    assert reference.keys() >= _by_image(out).keys()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for f in (out, store, wal):
        shutil.copy2(f, crashed / f.name)
    size = wal.stat().st_size
    offsets = sorted({0, 32, size // 3, size // 2, size - 4097, size - 1000, size - 1, size} - {-1})
    for offset in offsets:
        trial = tmp_path / f"cut{offset}"
        shutil.copytree(crashed, trial)
        with open(trial / wal.name, "r+b") as f:
            f.truncate(max(offset, 0))
        (trial / out.name).unlink()  # the output is rewritten from the store alone
        assert main(["predict", str(big), *BASE, "--output", str(trial / out.name)]) == 0, offset
        assert _by_image(trial / out.name) == reference, offset
        assert _leftovers(trial) == []


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_truncated_output_is_rewritten_from_the_store_without_recomputing(imgs, reference, tmp_path, suffix,
                                                                            capsys):
    out = tmp_path / f"r{suffix}"
    assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 0
    whole = out.read_bytes()
    last_image = len(whole) - 1 - whole.rstrip(b"\n").rfind(b"\n") if suffix != ".parquet" else 600
    offsets = sorted({0, 1, len(whole) // 2, *range(len(whole) - last_image, len(whole), max(1, last_image // 7))})
    for offset in offsets:
        out.write_bytes(whole[:offset])
        capsys.readouterr()
        assert main(["predict", str(imgs), *BASE[:-1], "--output", str(out)]) == 0, offset
        assert "0 images, 0 failed, 12 already in" in capsys.readouterr().err  # nothing recomputed
        assert _by_image(out) == reference, offset
        if suffix != ".parquet":
            assert out.read_bytes() == whole


# ------------------------------------------------------------------------------ full disk
def _fsize_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_write_error_keeps_the_earlier_results_and_the_next_run_completes(imgs, reference, tmp_path, suffix):
    """RLIMIT_FSIZE (EFBIG, as a full disk gives ENOSPC) at several sizes, so the failure lands in
    the store's log, its checkpoint or the output's rewrite: exit 3 with one line, the previous
    output intact or replaced by a whole newer one, and an unlimited run completes it."""
    first = sorted(imgs.iterdir())[:4]
    failures = 0
    for limit in (2_000, 6_000, 12_000, 20_000, 40_000):
        trial = tmp_path / str(limit)
        trial.mkdir()
        out = trial / f"r{suffix}"
        assert main(["predict", *map(str, first), *BASE, "--output", str(out)]) == 0
        before = out.read_bytes()
        proc = _cli(imgs, *BASE, "--batch-size", "2", "--refresh", "0", "--output", out,
                    preexec_fn=_fsize_limit(max(limit, len(before) + 1)))
        if proc.returncode:
            failures += 1
            assert proc.returncode == 3, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("se-multi predict: error: ")
            assert "File too large" in lines[0] or "a file size limit (ulimit -f) was reached" in lines[0], lines[0]
        kept = _by_image(out)  # readable, whole images
        assert set(kept) >= {str(p) for p in first} and all(kept[i] == reference[i] for i in kept)
        if out.read_bytes() != before:
            assert len(kept) > len(first)
        assert _leftovers(trial) == [] or proc.returncode == 0 or _leftovers(trial) == [f"{store_path(out).name}-wal"]
        assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 0
        assert _by_image(out) == reference
    assert failures >= 2  # the limits did hit writes


# ------------------------------------------------------------------------------ one writer
def test_a_second_writer_is_refused_and_the_first_completes(imgs, tmp_path):
    out = tmp_path / "r.jsonl"
    first = _start(_slow_folder(imgs, tmp_path), *BASE, "--batch-size", "1", "--refresh", "0",
                   "--output", out)
    _wait_for(first, out, 1)
    # the first run is stopped mid-way (its lock held, as by a run that is slow for any reason) while
    # the second starts: no race with how long the second interpreter takes to start on a busy machine
    # (36 images used to keep the first one going: 26 s of test -> 9 s, 2026-12-03)
    first.send_signal(signal.SIGSTOP)
    try:
        second = _cli(imgs, *BASE, "--output", out)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 3
    assert second.stderr.strip() == (f"se-multi predict: error: {out} is being written by another process (its store "
                                     f"{store_path(out).name} is locked): wait for that run to end, or choose "
                                     "another --output")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(_by_image(out)) == 12


# ------------------------------------------------------------------------------ what a resume is
def _checkpoint(path: Path) -> Path:
    """The seeded recipe with another seed, in the native layout."""
    from safetensors.numpy import save_file

    from se_multi.init import recipe_state
    from se_multi.models import build_model

    specs = build_model(MODEL).param_specs()
    save_file(recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=5), str(path))
    return path


def test_a_resume_with_other_settings_is_refused_naming_them(imgs, tmp_path, capsys):
    out = tmp_path / "r.csv"
    first = [str(p) for p in sorted(imgs.iterdir())[:2]]
    assert main(["predict", *first, *BASE, "--output", str(out)]) == 0
    before = out.read_bytes()
    args = dict(zip(BASE[::2], BASE[1::2]))
    changed = [({**args, "--model": "mobilenetv3_large_100"}, "model: mobilenetv3_small_100 there, "
                                                             "mobilenetv3_large_100 here"),
               ({**args, "--topk": "2"}, "topk: 3 there, 2 here"),
               ({**args, "--seed": "1"}, "seed: 0 there, 1 here"),
               ({**args, "--dtype": "float64"}, "dtype: float32 there, float64 here")]
    weights = _checkpoint(tmp_path / "w.safetensors")
    changed.append(({**args, "--weights": str(weights)}, "weights: none there, sha256:"))
    changed.append(({**args, "--output-dir": str(tmp_path / "m")}, f"output_dir: none there, {tmp_path / 'm'} here"))
    for flags, named in changed:
        argv = [x for kv in flags.items() for x in kv if x != "--quiet"]
        capsys.readouterr()
        assert main(["predict", *first, *argv, "--output", str(out)]) == 3, named
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and named in err and "--overwrite" in err, err
        assert out.read_bytes() == before  # refused: nothing written
    # the same settings spelled another way resume; --overwrite starts over
    assert main(["predict", *first, *BASE, "--output", str(out)]) == 0 and out.read_bytes() == before
    assert main(["predict", first[0], *BASE[:5], "2", "--output", str(out), "--overwrite"]) == 0
    rows = read_results(out)
    assert [r["image"] for r in rows] == [first[0]] * 2


def test_a_renamed_checkpoint_is_the_same_weights(imgs, tmp_path):
    a, b = _checkpoint(tmp_path / "a.safetensors"), tmp_path / "b.safetensors"
    shutil.copy(a, b)
    out = tmp_path / "r.jsonl"
    first = [str(p) for p in sorted(imgs.iterdir())]
    assert main(["predict", *first[:2], *BASE, "--weights", str(a), "--output", str(out)]) == 0
    assert main(["predict", *first, *BASE, "--weights", str(b), "--output", str(out)]) == 0
    assert len(_by_image(out)) == 12


def test_an_output_without_its_store_is_not_resumed(imgs, tmp_path, capsys):
    out = tmp_path / "old.jsonl"
    out.write_text('{"image": "x.png", "topk": []}\n')  # as se_multi 0.1 wrote it
    assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 3
    assert "its results store old.jsonl.sqlite does not" in capsys.readouterr().err
    assert main(["predict", str(imgs), *BASE, "--output", str(out), "--overwrite"]) == 0
    assert len(_by_image(out)) == 12


def test_a_damaged_store_is_an_error_and_overwrite_replaces_it(imgs, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    store_path(out).write_bytes(b"not a database at all" * 100)
    assert main(["predict", str(imgs), *BASE, "--output", str(out)]) == 3
    assert "not a se_multi results store" in capsys.readouterr().err
    assert main(["predict", str(imgs), *BASE, "--output", str(out), "--overwrite"]) == 0
    assert len(_by_image(out)) == 12


# ------------------------------------------------------------------------------ identity of images
def test_path_spellings_and_symlink_loops_run_each_image_once(imgs, reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.jsonl"
    monkeypatch.chdir(imgs.parent)
    for spelling in ("imgs", "./imgs", f"{imgs}/", f"{imgs}/../imgs/im0_00.png"):
        assert main(["predict", spelling, *BASE, "--output", str(out)]) == 0
    assert len(read_results(out)) == 12
    loop = tmp_path / "looped"
    loop.mkdir()
    shutil.copy(imgs / "im0_00.png", loop / "a.png")
    (loop / "again").symlink_to(loop, target_is_directory=True)
    found = expand_sources(str(loop / "**" / "*.png"))
    assert found == [str(loop / "a.png")]  # glob follows the loop; each real file is kept once
    capsys.readouterr()
    out2 = tmp_path / "loop.jsonl"
    assert main(["predict", str(loop / "**" / "*.png"), str(loop / "again" / "a.png"), *BASE[:-1],
                 "--output", str(out2)]) == 0
    assert len(read_results(out2)) == 1


def test_an_npy_batch_is_done_once_and_its_masks_never_collide(tmp_path, capsys):
    seg = "unet_se_resnet50_scse"
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    out, masks = tmp_path / "seg.jsonl", tmp_path / "mk"
    argv = ["predict", str(tmp_path / "a" / "x.npy"), str(tmp_path / "b" / "x.npy"), "--model", seg, "--backend",
            "numpy", "--output", str(out), "--output-dir", str(masks)]
    assert main(argv) == 0
    rows = read_results(out)
    assert sorted(r["image"] for r in rows) == sorted(f"{tmp_path / f / 'x.npy'}[{i}]" for f in "ab" for i in (0, 1))
    assert len({r["mask"] for r in rows}) == 4 and len(list(masks.iterdir())) == 4
    for r in rows:
        assert Path(r["mask"]).name == mask_file(f"{source_key(r['image'][:-3])}{r['image'][-3:]}")
    capsys.readouterr()
    assert main(argv) == 0  # the resume runs neither batch again
    assert "0 images, 0 failed, 2 already in" in capsys.readouterr().err and len(read_results(out)) == 4


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8 are a Linux/ext4 case")
@pytest.mark.parametrize("suffix", FORMATS)
def test_a_file_name_that_is_not_utf8_is_written_escaped_and_the_run_goes_on(imgs, tmp_path, suffix):
    folder = tmp_path / "names"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    shutil.copy(imgs / "im0_00.png", odd)
    shutil.copy(imgs / "im0_01.png", folder / "plain.png")
    out = tmp_path / f"r{suffix}"
    proc = _cli(folder, *BASE, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_by_image(out)) == sorted([f"{folder}/caf\\xe9.png", f"{folder}/plain.png"])
    assert _cli(folder, *BASE, "--output", out).returncode == 0 and len(_by_image(out)) == 2  # resumed by key


# ------------------------------------------------------------------------------ sources and files
def test_a_list_that_includes_itself_is_one_line_exit_3(tmp_path):
    (tmp_path / "a.txt").write_text("x.png\n@b.txt\n")
    (tmp_path / "b.txt").write_text("@a.txt\n")
    proc = _cli(f"@{tmp_path / 'a.txt'}", *BASE)
    assert proc.returncode == 3
    assert proc.stderr.strip() == (f"se-multi predict: error: @{tmp_path / 'b.txt'}/../a.txt: the list includes "
                                   f"itself (@{tmp_path / 'a.txt'} -> @{tmp_path / 'b.txt'} -> "
                                   f"@{tmp_path / 'a.txt'})").replace(f"{tmp_path / 'b.txt'}/..", str(tmp_path))


def test_outputs_take_the_umask(imgs, tmp_path):
    out = tmp_path / "r.parquet"
    proc = _cli(imgs, *BASE, "--output", out, preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o640 and store_path(out).stat().st_mode & 0o777 == 0o640
    assert _leftovers(tmp_path) == []


def test_a_run_that_stores_nothing_leaves_no_files(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = _cli(tmp_path / "missing-folder" / "*.png", *BASE, "--output", out)
    assert proc.returncode == 3 and sorted(os.listdir(tmp_path)) == []


# ------------------------------------------------------------------------------ Ray: the same failures
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time: ray.init() joins one already running
@pytest.mark.parametrize("extra,code,message", [
    (("--weights", "nope.safetensors"), 3, "se-multi predict: error: checkpoint not found: nope.safetensors"),
    (("--backend", "bogus"), 3, "se-multi predict: error: unknown backend 'bogus'"),
])
def test_ray_fails_with_the_local_runs_line_and_exit_code(imgs, extra, code, message):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'se-multi[ray]'")
    local = _cli(imgs, *BASE, *extra)
    ray = _cli(imgs, *BASE, *extra, "--ray", "--workers", "1")
    assert local.returncode == ray.returncode == code
    assert local.stderr.strip() == ray.stderr.strip() and ray.stderr.startswith(message), ray.stderr
