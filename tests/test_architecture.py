"""The package's layers and its acyclic modules, as ``pyproject.toml``'s import-linter contracts state them.

A change that makes a lower layer import a higher one (``passes`` importing ``benchmarking``, say) or
closes an import cycle between modules of one package fails here, with import-linter's explanation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_flow_down_the_layers_and_never_circle(monkeypatch, capsys):
    importlinter = pytest.importorskip("importlinter.cli", reason="import-linter is a dev dependency")
    monkeypatch.chdir(ROOT)
    code = importlinter.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    assert code == importlinter.EXIT_STATUS_SUCCESS, capsys.readouterr().out


# The only imports a function may make itself, each kept out of module level for one reason (import
# cost measured after torch on the developers' hosts).
LAZY_BACKENDS = {
    "transformers": "0.6-1 s to import; runs, report, compare and env never load a model",
    "tokenizers": "comes with transformers (above)",
    "accelerate": "comes with transformers (above)",
    "torchao": "1.5 s to import and warns about CUDA kernels it cannot load; only its passes use it",
    "onnx": "the ONNX passes' backend; runs that never export should not load it",
    "onnx_ir": "0.3 s to import; only the ONNX passes edit graphs",
    "onnxscript": "comes with torch's ONNX exporter; only export uses it",
    "onnxruntime": "loads ONNX Runtime's native library; only ONNX models run on it",
    "onnxruntime_genai": "loads the GenAI native library; only GenAI models run on it",
    "torch.distributed.fsdp": "0.6 s to import; only --parallel fsdp uses it",
    "torch.distributed.checkpoint": "0.6 s to import; only sharded (FSDP) checkpoints use it",
    "pynvml": "an optional extra (unbottle[gpu]); absent on machines without NVIDIA GPUs",
    "ray": "an optional extra (unbottle[ray]), 1-2 s to import; only optimize --ray uses it",
    "mlflow": "an optional extra (unbottle[mlflow]), 1 s to import; only runs export --mlflow uses it",
    "fastapi": "an optional extra (unbottle[serve]); only unbottle serve uses it",
    "starlette": "comes with FastAPI (above)",
    "uvicorn": "an optional extra (unbottle[serve]); only unbottle serve uses it",
}


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of each import inside a function body, outside ``if TYPE_CHECKING`` and
    availability probes (a ``try`` that catches ``ImportError``)."""
    import ast

    found: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            probe = isinstance(child, ast.Try) and any(
                h.type is not None and "ImportError" in ast.unparse(h.type) for h in child.handlers
            )
            if probe or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)):
                continue
            if in_function and isinstance(child, ast.ImportFrom) and not child.level:
                found.append((child.lineno, child.module or ""))
            elif in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    walk(ast.parse(path.read_text()), False)
    return found


def test_functions_import_only_the_lazy_backends_named_here():
    def lazy(module: str) -> bool:
        return any(module == name or module.startswith(name + ".") for name in LAZY_BACKENDS)

    stray = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "src" / "unbottle").rglob("*.py"))
        for line, module in _function_level_imports(path)
        if not lazy(module)
    ]
    assert not stray, "import these at module level (or name the backend in LAZY_BACKENDS):\n" + "\n".join(
        stray
    )


def test_the_package_and_its_command_line_load_no_lazy_backend():
    import subprocess
    import sys

    probe = (
        "import sys, unbottle; light = 'torch' not in sys.modules; import unbottle.cli.main; "
        f"print(light, sorted(m for m in sys.modules if m.split('.')[0] in {sorted(LAZY_BACKENDS)!r}"
        " or m.startswith(('torch.distributed.fsdp', 'torch.distributed.checkpoint'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split(maxsplit=1) == ["True", "[]\n"], out.stdout + out.stderr
