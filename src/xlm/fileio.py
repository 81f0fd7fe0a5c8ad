"""Writing files so that work is never half-written or silently replaced: the one atomic file
writer, the one JSON writer and atomic folder replacement of the project.

Ground floor: imports nothing from the rest of xlm.

* A file is written to a temporary sibling, flushed to disk and renamed over its name, so a
  reader (or a crash) sees the old file or the new one, never half of one.
* A symbolic link is written through: its target is replaced, the link stays a link.
* ``-`` and ``/dev/stdout`` mean standard output (no temporary file, no rename); other
  special files (``/dev/null``, a FIFO) are written in place.
* New files get the permissions ``open()`` gives under the umask (``mkstemp`` alone would
  give 0600); a replaced file keeps its permissions.
* JSON holds no ``NaN``/``Infinity`` (they are not JSON): a non-finite number is written as
  ``null`` and a one-line note on stderr names the keys.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

STDOUT_NAMES = ("-", "/dev/stdout")
_results: list[Any] = []  # the real standard output while print() is sent to stderr (see status_on_stderr)


def is_stdout(path: str | Path) -> bool:
    """True for the names that mean standard output: ``-`` and ``/dev/stdout``."""
    return str(path) in STDOUT_NAMES


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def usual_permissions(path: str | Path, directory: bool = False) -> None:
    """Give a temporary file or folder (``mkstemp``: 0600, ``mkdtemp``: 0700) the permissions
    ``open()`` or ``mkdir()`` would have given it, before it is renamed into place."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve_target(path: str | Path) -> Path:
    """Where writing ``path`` must land: the final target of a symbolic link (even a dangling
    one), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def temporary_sibling(path: str | Path) -> Path:
    """A new empty file beside ``path`` (through symbolic links), to be written and then moved
    over ``path`` by :func:`move_into_place` (or removed by the caller)."""
    target = resolve_target(path)
    if target.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp_name)


def move_into_place(tmp: Path, path: str | Path) -> None:
    """Flush the written temporary file ``tmp`` to disk and rename it over ``path`` (through
    symbolic links): a replaced file keeps its permissions, a new one gets the usual ones."""
    target = resolve_target(path)
    try:
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
    except FileNotFoundError:
        usual_permissions(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (through symbolic links) to write; when the block
    ends without error the file is flushed and renamed over ``path``, else it is removed."""
    tmp = temporary_sibling(path)
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path``: atomically for a regular file (see the module
    note), straight through for standard output and other special files."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if is_stdout(path):
        out = _results[-1] if _results else sys.stdout
        out.flush()
        out.buffer.write(raw)
        out.buffer.flush()
        return Path(path)
    target = resolve_target(path)
    if target.exists() and not target.is_file() and not target.is_dir():  # /dev/null, a FIFO, a terminal
        with open(target, "wb") as f:
            f.write(raw)
        return Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def finite_json(data: Any, where: str = "") -> tuple[Any, list[str]]:
    """``data`` with every NaN/Infinity float replaced by None, and the keys where that happened."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, [where or "<value>"]
    if isinstance(data, dict):
        out, bad = {}, []
        for k, v in data.items():
            out[k], b = finite_json(v, f"{where}.{k}" if where else str(k))
            bad += b
        return out, bad
    if isinstance(data, (list, tuple)):
        items, bad = [], []
        for i, v in enumerate(data):
            item, b = finite_json(v, f"{where}[{i}]")
            items.append(item)
            bad += b
        return items, bad
    return data, []


def json_text(
    data: Any, indent: int | None = 2, name: str = "JSON", sort_keys: bool = True, ensure_ascii: bool = True
) -> str:
    """JSON text of ``data`` (sorted keys unless ``sort_keys`` is False; with ``ensure_ascii``
    False, non-ASCII characters as they are); non-finite numbers become null, with a note on stderr."""
    clean, bad = finite_json(data)
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        print(f"note: {name}: {shown} not a finite number (NaN or infinite), written as null", file=sys.stderr)
    return json.dumps(clean, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=False) + "\n"


def write_json(
    path: str | Path, data: Any, indent: int | None = 2, sort_keys: bool = True, ensure_ascii: bool = True
) -> Path:
    """Write ``data`` as JSON atomically (``-`` or ``/dev/stdout``: standard output); see :func:`json_text`."""
    name = "standard output" if is_stdout(path) else str(path)
    return write_atomic(path, json_text(data, indent, name, sort_keys, ensure_ascii))


def read_json(path: str | Path, error: type[Exception], problem: str = "unreadable") -> Any:
    """The JSON value in the file ``path``; a file that is not UTF-8 JSON raises ``error`` with
    the one-line message ``"{path}: {problem}: {reason}"``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: {problem}: {e}") from None


def write_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """A matplotlib figure as an image file: PNG, or PDF/SVG/JPEG by the file's suffix."""
    buffer = io.BytesIO()
    suffix = Path(str(path)).suffix.lstrip(".").lower()
    fig.savefig(buffer, format=suffix if suffix in ("pdf", "svg", "jpg", "jpeg") else "png", **savefig)
    return write_atomic(path, buffer.getvalue())


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_abandoned_temporaries(directory: Path) -> None:
    """Delete the ``.NAME.tmp-PID-*`` siblings of ``directory`` whose process no longer runs:
    folders half-filled by a run that was killed (SIGKILL, power loss) before it could clean up.
    Those of running processes are left alone."""
    prefix = f".{directory.name}.tmp-"
    for p in directory.parent.iterdir():
        pid = p.name[len(prefix) :].split("-", 1)[0] if p.name.startswith(prefix) else ""
        if pid.isdigit() and p.is_dir() and not _process_running(int(pid)):
            status(f"removing {p}: left unfinished by a process that was killed")
            shutil.rmtree(p, ignore_errors=True)


def replace_directory(directory: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create or replace ``directory`` atomically: ``fill(tmp)`` writes a temporary sibling
    folder, which is renamed into place when complete. On failure (or an interrupt) the
    temporary folder is removed and a replaced folder is put back. A symbolic link to a
    folder is written through (its target is replaced)."""
    directory = resolve_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{os.getpid()}-", dir=directory.parent))
    usual_permissions(tmp, directory=True)
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    try:
        fill(tmp)
        if directory.exists():
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not directory.exists():  # failed between the two renames: put the old one back
            os.replace(old, directory)
        raise
    return directory


@contextmanager
def status_on_stderr() -> Iterator[None]:
    """Within the block, ``print()`` goes to stderr, while what is written to ``-`` or
    ``/dev/stdout`` still reaches standard output: it holds machine-readable results only."""
    _results.append(_results[-1] if _results else sys.stdout)  # nested: the outermost real one
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _results.pop()


def status(message: str) -> None:
    """A status line for the user: on stderr, so that standard output stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a folder we can write in."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise NotADirectoryError(f"{what} {path}: cannot be created, {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: cannot be created, no permission to write in {base}")


def check_output_file(path: str | Path, what: str = "output file") -> None:
    """Fail now, not after the work, if the file ``path`` could not be written."""
    if is_stdout(path):
        return
    target = resolve_target(path)
    if target.is_dir():
        raise IsADirectoryError(f"{what} {path}: is a folder, not a file")
    if target.exists() and not target.is_file():  # /dev/null, a FIFO: written in place
        if not os.access(target, os.W_OK):
            raise PermissionError(f"{what} {path}: no permission to write it")
        return
    _check_creatable(target, what)


def check_output_folder(path: str | Path, what: str = "output folder") -> None:
    """Fail now, not after the work, if the folder ``path`` could not be created or written in."""
    target = resolve_target(path)
    if target.exists():
        if not target.is_dir():
            raise NotADirectoryError(f"{what} {path}: is a file, not a folder")
        if not os.access(target, os.W_OK | os.X_OK):
            raise PermissionError(f"{what} {path}: no permission to write in it")
        return
    _check_creatable(target, what)


def check_output_paths(files: Sequence[str | Path | None] = (), folders: Sequence[str | Path | None] = ()) -> None:
    """Check every output a command will write before it starts (``None`` entries are skipped)."""
    for f in files:
        if f is not None and str(f) != "":
            check_output_file(f)
    for d in folders:
        if d is not None and str(d) != "":
            check_output_folder(d)
