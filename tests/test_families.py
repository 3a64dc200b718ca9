"""A model family is one file: everything a family declares (builders, pretrained configs and the
default tag, checkpoint layouts and their converters, the conformance case) is registered from its
own module, and the registry finds the module by scanning the package ``se_multi.models``.

The proof: a toy family, written by the test as one module into a temporary folder that is added
to the package's path (as if the file were dropped into ``se_multi/models/``), shows up everywhere
a family's declarations are read, and no other file is written or edited.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import se_multi.models
from se_multi import conformance
from se_multi.dispatch import get_backend
from se_multi.models import Model, create_model, list_models, register_model, registry
from se_multi.nn import Linear
from se_multi.pretrained import PretrainedCfg

TOY_MODULE = "toy_family"
TOY = "toy_senet"
TOY_TAG = "toy_senet.toy_in10"
TOY_INPUT = (2, 3, 17, 13)

#: the whole family: one file (what a contributor adds to se_multi/models/)
TOY_SOURCE = textwrap.dedent('''
    """A toy family: a tiny SE net, one pretrained config, one peer layout, one conformance case."""

    from se_multi.models.registry import register_model
    from se_multi.nn import ConvNormAct, Linear, Module, SqueezeExcite
    from se_multi.pretrained import PretrainedCfg


    class ToySENet(Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.stem = ConvNormAct(3, 8, 3, 2, conv="stem.conv", bn="stem.bn")
            self.se = SqueezeExcite(8, 2)
            self.fc = Linear(8, num_classes, name="head")
            self.classifier_key = "head.weight"

        def forward(self, ops, x):
            x = self.se(ops, self.stem(ops, x))
            return self.fc(ops, ops.global_avg_pool(x))


    def from_peer(state):
        """The peer's layout names the SE block 'attention'; its FCs 'squeeze' and 'expand'."""
        if not any(k.startswith("attention.") for k in state):
            return None
        names = {"attention.squeeze.": "se.fc1.", "attention.expand.": "se.fc2."}
        native = {}
        for key, value in state.items():
            for peer, ours in names.items():
                key = ours + key[len(peer):] if key.startswith(peer) else key
            native[key] = value
        return native, {}


    @register_model(pretrained=[PretrainedCfg("toy_senet.toy_in10", input_size=(3, 32, 32), crop_pct=1.0,
                                              num_classes=10)],
                    layouts=[("peer", from_peer)], conformance_input=(2, 3, 17, 13))
    def toy_senet(num_classes: int = 10) -> ToySENet:
        return ToySENet(num_classes)
''')


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """The toy family's one file in a folder on ``se_multi.models``' path; afterwards the registry
    is as it was (the toy's entries gone, the package's path and modules restored)."""
    (tmp_path / f"{TOY_MODULE}.py").write_text(TOY_SOURCE, encoding="utf-8")
    list_models()  # the built-in families first, so that the toy is the only thing the next scan adds
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(se_multi.models, "__path__", [*se_multi.models.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"se_multi.models.{TOY_MODULE}", raising=False)
    yield tmp_path
    sys.modules.pop(f"se_multi.models.{TOY_MODULE}", None)


def test_a_new_family_is_one_file(toy_family):
    from se_multi.pretrained import DEFAULT_TAGS, default_tag, get_config, list_pretrained

    assert TOY in list_models()
    entry = registry.entries()[TOY]
    assert entry.family == f"se_multi.models.{TOY_MODULE}"
    assert sys.modules[entry.family].__file__ == str(toy_family / f"{TOY_MODULE}.py")
    # pretrained configs and the default tag
    assert list_pretrained(TOY) == [TOY_TAG] and TOY_TAG in list_pretrained()
    assert default_tag(TOY) == TOY_TAG and DEFAULT_TAGS[TOY] == TOY_TAG
    assert get_config(TOY).input_size == (3, 32, 32) and get_config(TOY_TAG) is get_config(TOY)
    # its conformance case, run as validate runs it (numpy float32 against the float64 reference)
    assert (TOY, TOY_INPUT) in conformance.model_cases() and (TOY, TOY_INPUT) in conformance.MODEL_CASES
    check = next(c for c in conformance.model_checks() if c.op == f"model {TOY}")
    result = conformance.run_check(check, get_backend("numpy", dtype="float32"))
    assert result.passed and result.max_rel is not None, result


def test_a_new_familys_layout_is_detected_and_converted(toy_family, tmp_path_factory):
    from safetensors.numpy import save_file

    from se_multi.convert import convert_checkpoint
    from se_multi.init import recipe_state
    from se_multi.models import build_model

    specs = build_model(TOY).param_specs()
    native = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=3)
    assert any(k.startswith("se.fc1.") for k in native)
    peer = {k.replace("se.fc1.", "attention.squeeze.").replace("se.fc2.", "attention.expand."): v
            for k, v in native.items()}
    folder = tmp_path_factory.mktemp("toy_checkpoints")
    src, dst = folder / "peer.safetensors", folder / "native.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in peer.items()}, str(src))

    summary = convert_checkpoint(str(src), str(dst))  # no --model: detected from the keys
    assert (summary["model"], summary["layout"]) == (TOY, "peer")
    assert summary["tensors"] == len(specs)
    x = np.random.default_rng(0).standard_normal((2, 3, 21, 19)).astype(np.float32)
    from_peer = create_model(TOY, weights=str(src), backend="numpy").predict_numpy(x)
    from_converted = create_model(TOY, weights=str(dst), backend="numpy").predict_numpy(x)
    ops = get_backend("numpy", dtype="float32")
    from_state = Model(TOY, build_model(TOY).bind(native, ops), ops).predict_numpy(x)
    np.testing.assert_array_equal(from_peer, from_converted)
    np.testing.assert_array_equal(from_peer, from_state)  # the converter put every tensor in its place


def test_the_toy_family_is_gone_afterwards():
    """The fixture leaves the registry as the built-in families made it (other tests list every model)."""
    from se_multi.pretrained import DEFAULT_TAGS, list_pretrained

    assert TOY not in list_models()
    assert all(name != TOY for name, _ in conformance.model_cases())
    assert TOY_TAG not in list_pretrained() and TOY not in DEFAULT_TAGS  # no stale lookup table


def test_every_family_declares_a_conformance_case_and_every_model_a_default_tag():
    from se_multi.pretrained import default_tag

    entries = registry.entries()
    families = {e.family for e in entries.values()}
    covered = {entries[name].family for name, _ in conformance.model_cases()}
    assert families - covered == set(), "a family whose models validate never checks whole"
    for name in entries:
        assert default_tag(name).startswith(f"{name}.")


def test_register_model_is_still_a_bare_decorator(monkeypatch):
    from se_multi.pretrained import default_tag

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model
    def bare_toy(num_classes: int = 3):
        return Linear(4, num_classes)

    assert "bare_toy" in list_models() and registry.layouts("bare_toy") == []
    assert "bare_toy" not in dict(conformance.model_cases())
    with pytest.raises(ValueError, match="no pretrained config for model 'bare_toy'"):
        default_tag("bare_toy")


@pytest.mark.parametrize("kwargs, message", [
    (dict(pretrained=["not a config"]), "is not a tag of 'bad_toy'"),
    (dict(pretrained=[("seresnet50.a1_in1k",)]), "is not a tag of 'bad_toy'"),
    (dict(pretrained=[PretrainedCfg("bad_toy.a"), PretrainedCfg("bad_toy.a")]), "a pretrained tag is given twice"),
    (dict(default_tag="bad_toy.in1k"), "default_tag 'bad_toy.in1k' is not one of its pretrained tags"),
    (dict(conformance_input=(2, 3, 0, 5)), "conformance_input must be an NCHW shape"),
    (dict(conformance_input=(3, 16, 16)), "conformance_input must be an NCHW shape"),
    (dict(layouts=[lambda state: None]), "layouts are \\(name, converter\\) pairs"),
])
def test_register_model_refuses_what_would_never_work(monkeypatch, kwargs, message):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises((ValueError, TypeError), match=message):
        register_model(lambda num_classes=3: None, name="bad_toy", **kwargs)
    assert "bad_toy" not in registry._REGISTRY
