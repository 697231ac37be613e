"""Where vitaccel writes, and how: the build folder and atomic file writes.

Every layer that writes files uses these two, so that builds land in one place and a failed or
interrupted write never leaves a half-written file that a later run would trust.
"""

import os
import tempfile
from pathlib import Path

__all__ = ["build_root", "atomic_write_text"]


def build_root() -> Path:
    """Where builds and run files go: ``$VITACCEL_BUILD_DIR``, else ``build/`` of the source
    checkout (or of the working directory for an installed package)."""
    if "VITACCEL_BUILD_DIR" in os.environ:
        return Path(os.environ["VITACCEL_BUILD_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    return (checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()) / "build"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename, so that
    a reader never sees a half-written file and a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
