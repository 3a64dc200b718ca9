"""Packaging and import rules that every other part relies on."""

import subprocess
import sys


def test_import_se_multi_imports_no_framework():
    code = (
        "import sys, se_multi; se_multi.available_backends(); se_multi.backend_status();"
        "loaded = [m for m in ('torch', 'mlx', 'cupy', 'onnxruntime', 'onnx', 'openvino', 'threadpoolctl') if m in sys.modules];"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import se_multi loaded {out.stdout.strip()}"


def test_backends_install_under_se_multi_only(tmp_path):
    # run outside the checkout, so only what the install put on sys.path is visible
    code = (
        "import importlib.util as u;"
        "print(u.find_spec('se_multi.backends.numpy_backend') is not None, u.find_spec('backends') is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["True", "True"], "se_multi.backends missing or a top-level 'backends' installed"
