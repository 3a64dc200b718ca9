"""Pages generated at build time (mkdocs-gen-files; see mkdocs.yml): never written by hand.

- ``cli.md``: the help of ``se-multi`` and of every subcommand, from the argparse parsers
  ``se_multi.cli.build_parser()`` builds (each subcommand's module adds its own arguments);
- ``papers.md``: the SENet paper's tables beside se_multi's counts, as ``se-multi info --paper``
  prints them (``se_multi.paper.paper_tables``);
- ``api/*.md``: one mkdocstrings page per public module (:data:`API_MODULES`);
- the tolerance table, from ``se_multi.conformance.POLICY``, where a page says
  ``<!-- generated: tolerance table -->`` (precision.md, validation.md);
- ``contributing.md`` and ``changelog.md``: the repository's CONTRIBUTING.md and CHANGELOG.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent

#: the public modules, each a page of the Python API: (module, one line on what it is)
API_MODULES = [
    ("se_multi", "the package: create_model, get_backend, to_numpy, preprocess, predict_batch, model_info, export_onnx"),
    ("se_multi.models", "the model registry, Model and create_model"),
    ("se_multi.backend", "the backend contract: Backend, GraphBackend"),
    ("se_multi.op_table", "every op of the backend contract, declared once: arguments, shape rule, reference, conformance cases"),
    ("se_multi.models.registry", "register_model: what a model family declares"),
    ("se_multi.dispatch", "finding backends by name, entry points and module:Class"),
    ("se_multi.shapes", "every op's output size and its error"),
    ("se_multi.conformance", "the conformance suite behind se-multi validate, and its tolerance table"),
    ("se_multi.metrics", "the error metrics validate, bench and the parity tests report"),
    ("se_multi.dtypes", "the floating dtypes"),
    ("se_multi.nn", "modules and the SE blocks"),
    ("se_multi.checkpoint", "reading checkpoints"),
    ("se_multi.preprocess", "image to model input, as timm evaluates a checkpoint"),
    ("se_multi.predict", "classifying or segmenting many images"),
    ("se_multi.results", "the results store behind se-multi predict --output"),
    ("se_multi.info", "parameters and multiply-adds, counted from the graph"),
    ("se_multi.onnx_export", "ONNX export"),
    ("se_multi.quantize", "post-training int8 quantization"),
    ("se_multi.bench", "the benchmark behind se-multi bench"),
    ("se_multi.cache", "every cache se_multi keeps, and its bound"),
]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_page() -> str:
    from se_multi.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; a page has a fixed width
    parser = build_parser()
    out = ["# CLI reference", "",
           "Generated from the argparse parsers of `se_multi.cli` when this site was built: "
           "it is exactly what `se-multi --help` and `se-multi COMMAND --help` print.", "",
           "## se-multi", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subparsers(parser).items():
        out += [f"## se-multi {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def papers_page() -> str:
    from se_multi.paper import paper_tables

    return "\n".join([
        "# The papers", "",
        "se_multi implements SE (Hu, Shen, Sun, *Squeeze-and-Excitation Networks*, CVPR 2018) and "
        "sSE / scSE (Roy, Navab, Wachinger, *Concurrent Spatial and Channel Squeeze & Excitation in "
        "Fully Convolutional Networks*, MICCAI 2018). `se_multi.model_info(name, input_size=(224, 224), "
        "**options)` counts parameters and multiply-accumulates by walking the model's own op graph "
        "with shapes only (no arrays, no framework; under a second for SE-ResNet-152), with the SE "
        "blocks' share and the gate multiplies apart; `se-multi info seresnet50 --reduction 8` prints "
        "the per-stage table. The tables below are what `se-multi info --paper` prints, generated "
        "when this site was built. Parameter counts also equal, exactly, the learnable entries of "
        "the peers' state dicts in the parity fixtures (`tests/test_info.py`).", "",
        paper_tables().rstrip(), ""])


TOLERANCE_MARKER = "<!-- generated: tolerance table -->"


def _u_fraction(x: float) -> str:
    from fractions import Fraction

    f = Fraction(x).limit_denominator(64)
    return "u" if f == 1 else (f"u/{f.denominator}" if f.numerator == 1 else f"{f.numerator}u/{f.denominator}")


def _num(x: float) -> str:
    """1.3e-06 -> 1.3e-6, 1.0e-04 -> 1e-4: the way the pages write tolerances."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def tolerance_table() -> str:
    """``se_multi.conformance.POLICY`` as a Markdown table: what validate holds each dtype to."""
    from se_multi import conformance as c

    rows = ["| dtype | u | `assert_close` rtol | op: max rel err | model: max rel err | elementwise bias "
            "| whole-model bias (mean of the models) | precision: every model errs at least |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dtype, p in c.POLICY.items():
        floating = not p.models_only
        u = _num(p.u) if floating else "–"
        rtol = _num(p.anchor_rtol) if p.anchor_rtol is not None else "–"
        op = _num(p.op) if p.op is not None else "– (whole models only)"
        elementwise = (f"≤ {c.ELEMENTWISE_BIAS_Z:g}u/√N" if p.elementwise_bias(1) is not None else "–")
        bias = f"≤ {_u_fraction(c.MODEL_BIAS_U)}" if p.model_bias is not None else "–"
        if p.precision_floor is None:
            floor = "–"
        elif floating:
            floor = f"{_u_fraction(c.PRECISION_FLOOR_U)}"
        else:
            floor = _num(p.precision_floor)
        floor = floor if floor == "–" else f"≥ {floor}"
        rows.append(f"| {dtype} | {u} | {rtol} | {op} | {_num(p.model)} | {elementwise} | {bias} | {floor} |")
    return "\n".join(rows)


def with_generated_tables(page: str) -> None:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    if TOLERANCE_MARKER not in text:
        raise ValueError(f"docs/{page} has no {TOLERANCE_MARKER!r}")
    with mkdocs_gen_files.open(page, "w") as f:
        f.write(text.replace(TOLERANCE_MARKER, tolerance_table()))


def api_pages() -> None:
    lines = ["# Python API", "",
             "Generated from the docstrings by mkdocstrings when this site was built. "
             "`import se_multi` imports no framework; each backend imports its own on first use.", ""]
    for module, what in API_MODULES:
        with mkdocs_gen_files.open(f"api/{module}.md", "w") as f:
            f.write(f"# `{module}`\n\n::: {module}\n")
        lines.append(f"- [`{module}`]({module}.md): {what}")
    with mkdocs_gen_files.open("api/index.md", "w") as f:
        f.write("\n".join(lines) + "\n")


def copied_page(name: str, target: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    with mkdocs_gen_files.open(target, "w") as f:
        f.write(text)
    mkdocs_gen_files.set_edit_path(target, f"../{name}")


with mkdocs_gen_files.open("cli.md", "w") as f:
    f.write(cli_page())
with mkdocs_gen_files.open("papers.md", "w") as f:
    f.write(papers_page())
api_pages()
for page in ("precision.md", "validation.md"):
    with_generated_tables(page)
copied_page("CONTRIBUTING.md", "contributing.md")
copied_page("CHANGELOG.md", "changelog.md")
