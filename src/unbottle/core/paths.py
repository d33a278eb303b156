"""Checks on the folders a verb will write, made before any work: a result that can't be saved is
refused in one line at the start, not after minutes of training or quantizing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from unbottle.core.errors import ConfigError
from unbottle.core.naming import opt


def check_writable_folder(path: Path, flag: str = "-o") -> None:
    """Refuse an output folder that is an existing file or lies where nothing can be written.

    Args:
        path: the folder a verb will create (or fill).
        flag: the CLI flag that named it, for the advice (``opt('output', flag=...)``).

    Raises:
        ConfigError: ``path`` or one of its parents is a file, or the nearest existing parent is not
            writable (a read-only mount, no permission).
    """
    path = Path(path)
    choose = f"choose another {opt('output', flag=flag)}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {path} is a file, not a folder; {choose} (a folder to create)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"output {path} lies under {parent}, which is a file; {choose}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"can't write output {path}: {parent} is read-only or not yours; {choose}")


def save_failed(out: Path, err: OSError | RuntimeError, flag: str = "-o") -> ConfigError:
    """The one-line error for a save that failed midway (full disk, a mount gone read-only)."""
    reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
    return ConfigError(
        f"saving to {out} failed: {reason}; nothing was saved there — free space or choose another "
        f"{opt('output', flag=flag)}"
    )


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created) through a temporary file beside it and
    ``os.replace``, so a reader sees the old file or the new one, never a part; on an ``OSError``
    nothing is left behind and the error is raised."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except OSError:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path
