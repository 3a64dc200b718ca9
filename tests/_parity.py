"""Parity fixtures (tests/data/parity, copied from shared/fixtures/parity): peer outputs on
deterministic weights. The weights are regenerated here with se_multi.init's recipe (our
own code for the recipe the fixture README describes), written as a checkpoint in the
peer's own key layout, and loaded through the public loader like a real checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from se_multi.conformance import MODEL_TOLERANCES, tolerance_for
from se_multi.init import recipe_input, recipe_state

DATA = Path(__file__).parent / "data" / "parity"

#: the ResNet-family parity runs: (backend, dtype, tolerance on max|ours - peer| / max|peer|: the model-level tolerance)
RUNS = tuple((b, d, MODEL_TOLERANCES[d]) for b, d in (
    ("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"), ("mlx", "float32"), ("cupy", "float32"),
    ("onnxruntime", "float32"), ("openvino", "float32")))
#: the runs whose stage features are compared (op-by-op backends: a whole graph exposes none)
FEATURE_RUNS = (("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"))
#: the dtype the fixtures store stage features in (the peer's float64 run, rounded)
FEATURE_STORED = "float32"


def feature_tolerance(dtype: str) -> float:
    """What a stage feature computed in ``dtype`` is held to: a stage feature is an internal
    feature map, so the op-level row of the one tolerance table, of ``dtype`` or of the float32
    the peer's values are stored in, whichever is coarser (a float64 run can match float32
    values only to float32 rounding)."""
    return max(tolerance_for(dtype), tolerance_for(FEATURE_STORED))

#: fixture folder -> se_multi model name
FIXTURE_MODELS = {
    "seresnet50": "seresnet50",
    "resnet50": "resnet50",
    "legacy_seresnet50": "legacy_seresnet50",
    "mobilenetv1_100": "mobilenetv1_100",
    "se_mobilenetv1_100": "se_mobilenetv1_100",
    "mobilenetv3_large_100": "mobilenetv3_large_100",
    "torchvision.mobilenet_v3_large": "mobilenetv3_large_100",
    "smp.unet_se_resnet50_scse": "unet_se_resnet50_scse",
    "legacy_senet154": "legacy_senet154",
    "legacy_seresnet18": "legacy_seresnet18",
    "legacy_seresnext50_32x4d": "legacy_seresnext50_32x4d",
    "seresnet152d": "seresnet152d",
    "seresnext26t_32x4d": "seresnext26t_32x4d",
    "seresnext101_32x8d": "seresnext101_32x8d",
}
#: the plain twins of the SENet paper's Table 2 networks (tests/test_parity_vgg_inception.py):
#: fixture -> (se_multi model, builder options the fixture's input size needs)
TWIN_FIXTURES = {
    "torchvision.vgg16_bn": ("vgg16_bn", {"img_size": (112, 144)}),
    "inception_resnet_v2": ("inception_resnet_v2", {}),
    "pretrainedmodels.bninception": ("bninception", {}),
}


def manifest(fixture: str) -> dict:
    return json.loads((DATA / fixture / "manifest.json").read_text())


def expected(fixture: str) -> dict[str, np.ndarray]:
    with np.load(DATA / fixture / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def peer_state(fixture: str) -> dict[str, np.ndarray]:
    m = manifest(fixture)
    return recipe_state(((k["name"], k["shape"], k["kind"]) for k in m["keys"]), seed=m["seed"])


def peer_input(fixture: str) -> np.ndarray:
    m = manifest(fixture)
    return recipe_input(m["input_shape"], seed=m["seed"])


def write_peer_checkpoint(fixture: str, directory: Path) -> Path:
    """The recipe's weights in the peer's key layout, as a .safetensors file in ``directory``,
    written once: a file of that name already there holds the same bytes (the recipe is
    deterministic) and is used as it is. A new one is written beside its name and renamed into
    it, so that a process sharing the folder (conftest's ``peer_checkpoint``) never reads half a
    file."""
    from safetensors.numpy import save_file

    path = Path(directory) / f"{fixture}.safetensors"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        save_file(peer_state(fixture), str(partial))
        os.replace(partial, path)
    return path


def rel_err(ours, peer) -> float:
    """max|ours - peer| / max|peer|"""
    ours, peer = np.asarray(ours, np.float64), np.asarray(peer, np.float64)
    return float(np.abs(ours - peer).max() / np.abs(peer).max())


def feature_modules(fixture: str, module) -> dict:
    """The submodules whose outputs are the intermediates the fixture records, named as it names
    them: a model's ``forward_features`` stages (``layer1`` ..., ``decoder.blocks.0`` ...: the
    module at that attribute path); for MobileNet (no ``forward_features``), ``blocks.i`` (timm's
    stages) or, for the torchvision fixture, ``features.k`` (its units: the stem, then every block
    in order)."""
    if fixture.startswith("torchvision."):
        blocks = [block for stage in module.blocks for block in stage]
        return {f"features.{k}": unit for k, unit in enumerate([module.conv_stem, *blocks])}
    with np.load(DATA / fixture / "expected.npz") as stored:  # the names only, not the arrays
        names = [key.removeprefix("feature:") for key in stored.files if key.startswith("feature:")]
    found = {}
    for name in names:
        unit = module
        for part in name.split("."):
            unit = unit[int(part)] if part.isdigit() else getattr(unit, part)
        found[name] = unit
    return found


@contextlib.contextmanager
def recording_outputs(units: dict, ops):
    """``with recording_outputs(units, ops) as seen: model(x)``: ``seen[name]`` is what
    ``units[name]`` returned on ``ops`` during the block, so the stage features come from the
    model's own forward, the one that gave its logits, not from a second pass (each was a whole
    forward of the backbone: ~13 s of the test command's worker time, 2026-12-04)."""
    seen = {}

    def recorder(name, forward):
        def record(on, *args, **kwargs):
            out = forward(on, *args, **kwargs)
            if on is ops:  # not a shape tracer's pass over the same modules
                seen[name] = out
            return out
        return record

    for name, unit in units.items():
        unit.forward = recorder(name, unit.forward)  # shadows the class's forward on this instance
    try:
        yield seen
    finally:
        for unit in units.values():
            del unit.forward


def peer_runs(directory: Path):
    """``get(fixture, backend, dtype) -> (logits, stage features or None)``, float64, each computed
    once: the fixture's checkpoint is written once into ``directory``, loaded through the public
    ``create_model(weights=path)``, run, and the model dropped at once (SENet-154 has 115M
    parameters), so one model at a time is alive. Stage features are taken for
    :data:`FEATURE_RUNS` only. ``get.graphs(fixture, backend, dtype)``: for a whole-graph backend's
    run, ``(whole graphs, one-op graphs)`` its model held after the call (``(1, 0)``: the call took
    the whole-graph path)."""
    import gc

    import se_multi
    from se_multi.backend import GraphBackend

    cache, graphs = {}, {}

    def get(fixture, backend, dtype):
        key = (fixture, backend, dtype)
        if key not in cache:
            path = write_peer_checkpoint(fixture, directory)
            model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(path), backend=backend, dtype=dtype)
            units = feature_modules(fixture, model.module) if (backend, dtype) in FEATURE_RUNS else {}
            with recording_outputs(units, model.ops) as seen:
                logits = se_multi.to_numpy(model(peer_input(fixture))).astype(np.float64)
            features = ({name: se_multi.to_numpy(model.ops.output(f)).astype(np.float64) for name, f in seen.items()}
                        if units else None)
            if isinstance(model.ops, GraphBackend):
                graphs[key] = (len(model.module.graphs(model.ops.graph_cache_size)), len(model.ops._op_graphs))
            cache[key] = logits, features
            del model
            gc.collect()
        return cache[key]

    def graphs_of(fixture, backend, dtype):
        get(fixture, backend, dtype)
        return graphs[(fixture, backend, dtype)]

    get.graphs = graphs_of
    return get
