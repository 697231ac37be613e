"""Where vitaccel writes, and how: the build folder and atomic file writes.

Every layer that writes files uses these, so that builds land in one place and a failed or
interrupted write never leaves a half-written file that a later run would trust. Files written
get the mode the user's umask gives, as ``open()`` would.
"""

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["build_root", "atomic_path", "atomic_open", "atomic_write_text", "new_file_mode", "read_npz", "format_error"]


def build_root() -> Path:
    """Where builds and run files go: ``$VITACCEL_BUILD_DIR``, else ``build/`` of the source
    checkout (or of the working directory for an installed package)."""
    if "VITACCEL_BUILD_DIR" in os.environ:
        return Path(os.environ["VITACCEL_BUILD_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    return (checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()) / "build"


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process's umask."""
    # The umask can only be read by setting it; set it straight back.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """A temporary file beside ``path`` for a writer that wants a file name (a simulator writing a
    waveform, say), renamed to ``path`` when the block ends, with the mode of a new file
    (:func:`new_file_mode`). An exception (an interruption too) removes it and leaves ``path`` as it
    was. An ``OSError`` about the temporary file names ``path``: it is the one the user knows."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """A file object (``mode`` ``"wb"`` or ``"w"``) whose content appears at ``path`` whole when
    the block ends (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "w") as f:
        f.write(text)


def read_npz(path: Path, kind: str, error: type[Exception]) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``path``; ``error`` naming ``kind`` (e.g. "IntViT file")
    when the file is missing, or is no readable archive (corrupt, truncated or another format)."""
    if not path.is_file():
        raise error(f"{kind} {str(path)!r} does not exist")
    try:
        if not zipfile.is_zipfile(path):
            # np.load would read it as a pickle and advise allow_pickle, which is no help here.
            raise zipfile.BadZipFile("not an .npz archive")
        # Our own handle: np.load leaks its file when the zip directory is unreadable.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise error(f"{str(path)!r} is not a readable {kind} (corrupt, truncated or another format): "
                    f"{exc}") from None


def format_error(meta, path, fmt: str, version: int, what: str, remedy: str) -> str | None:
    """Why the ``meta`` record read from ``path`` is not ``what`` (format ``fmt``) of ``version``,
    ending with ``remedy`` for another version; None when it is."""
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        return f"{str(path)!r} is not {what} (format {found!r}, expected {fmt!r})"
    if meta.get("version") != version:
        return (f"{str(path)!r} is {what} of version {meta.get('version')!r}, but this vitaccel reads "
                f"version {version}: {remedy}")
    return None
