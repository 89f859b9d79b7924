"""Writing files safely: outputs checked before the work starts, atomic writes, writer locks.

- `check_output(path)` / `check_output_dir(path)`: fail in one line *before* minutes of work if
  a file (or directory) cannot be created there: a parent that is a regular file, a directory
  where a file should go, a read-only file system, no permission.
- `atomic_path(path)`: write to a temporary file beside `path` and rename it over `path`, so a
  crash, a full disk or Ctrl-C leaves the old file (or none), never half of a new one;
  `atomic_dir(path)` does the same for a new directory.
- `writer_lock(path)`: one writer per run directory or output file. The lock is `flock` on a
  file beside the target, so the kernel releases it when the holder dies: a killed process
  never leaves a stale lock behind.

Every failure here is a `UserError` naming the path (the CLI prints it as one line, exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from glob import escape as glob_escape
from pathlib import Path

from diffpolicy.errors import UserError


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` (itself excluded) that exists; UserError if one is a file."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot write {path}: {parent} is a file, not a directory")
            return parent
    raise UserError(f"cannot write {path}: no existing parent directory")


def _probe(directory: Path, target: Path) -> None:
    """Create and remove a file in `directory` to prove that files can be made there."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=directory)
    except OSError as e:
        raise UserError(f"cannot write {target}: {directory}: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def check_output(path: str | Path, parents: bool = True) -> Path:
    """Fail now if the file `path` could not be written later; return it as a Path.

    parents: missing parent directories are fine (the writer creates them) as long as they can
    be created; with False the parent directory must exist already.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path {path} is a directory")
    if path.exists() and not path.is_file():  # a rename would replace /dev/null, a FIFO...
        raise UserError(f"output path {path} is not a regular file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"output file {path} is not writable")
    if not parents and not path.parent.is_dir():
        _existing_ancestor(path)  # names a parent that is a file
        raise UserError(f"output directory {path.parent} does not exist")
    _probe(path.parent if path.parent.is_dir() else _existing_ancestor(path), path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """Fail now if the directory `path` could not be created and filled later."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output directory {path} is a file")
    _probe(path if path.is_dir() else _existing_ancestor(path), path)
    return path


def _remove_stale_temps(path: Path) -> None:
    """Delete `.NAME.<pid>.*.tmp*` files beside `path` whose writer process no longer exists."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:  # alive, owned by someone else
            continue


@contextlib.contextmanager
def atomic_path(path: str | Path, parents: bool = True):
    """Yield a temporary path beside `path`; on success rename it over `path` in one step.

    A crash, exception or Ctrl-C leaves `path` as it was (absent or the old file). The temporary
    file is named `.NAME.<pid>.<random>.tmp<ext>` (the extension kept, for writers that choose a
    format by it); a SIGKILL leaves it behind, and the next write to `path` removes those whose
    process is gone (never a live writer's).
    """
    path = check_output(path, parents)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:  # durable before the rename publishes it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # h5py raises RuntimeError for a failed flush
        failure = write_error(e, path) if getattr(e, "filename", None) is None else None
        if failure is not None:  # a write error (h5py, ffmpeg: a long text): errno and path
            raise failure from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a new temporary directory beside `path` (a new or empty directory); rename it to
    `path` when the block succeeds, remove it when it fails: `path` never holds half of it."""
    path = check_output_dir(path)
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"output directory {path} exists and is not empty: choose a new one")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    )
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def disk_full(directory: str | Path) -> bool:
    """Less than 1 MiB left for this process on the file system of `directory`."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return free * st.f_frsize < 1 << 20


def write_error(e: BaseException, path: str | Path) -> OSError | None:
    """The OSError behind a failed write of `path`, for writers that raise their own types or
    texts (safetensors, torch.save, h5py, ffmpeg): the errno they name, or ENOSPC when the
    disk is full (their "broken pipe" or "unexpected pos" is a symptom), else EIO for an
    OSError and None (not a write failure: a bug to show as it is) for anything else."""
    code = getattr(e, "errno", None)
    if not isinstance(code, int) or not code:
        m = re.search(r"errno = (\d+)|os error (\d+)|\[Errno (\d+)\]", str(e))
        code = int(next(g for g in m.groups() if g)) if m else None
    if code in (None, errno.EPIPE, errno.EIO) and disk_full(Path(path).parent):
        code = errno.ENOSPC
    if code is None and isinstance(e, OSError):
        code = errno.EIO
    return None if code is None else OSError(code, os.strerror(code), str(path))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """`fig.savefig(path)` atomically (the format from the extension; none: PNG)."""
    fmt = Path(path).suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot write the plot {path}: '.{fmt}' is not an image format")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temporary file + rename)."""
    write_text(path, json.dumps(data, indent=2))


@contextlib.contextmanager
def writer_lock(target: str | Path, what: str = "output"):
    """Hold an exclusive lock for writing `target` (a run directory or an output file).

    A second writer gets a UserError at once. The lock file is `TARGET/.lock` for a directory
    and `.NAME.lock` beside a file; the kernel drops the lock when its holder exits or dies (a
    killed holder leaves the file, which the next writer takes over), and a clean exit removes
    it. A lock taken on a file that was unlinked meanwhile does not count (inode check).
    """
    target = Path(target)
    if target.is_dir() or what == "run directory":
        target.mkdir(parents=True, exist_ok=True)
        lock_path = target / ".lock"
    else:
        lock_path = target.with_name(f".{target.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(lock_path).st_ino:  # released and unlinked
                raise BlockingIOError(errno.EWOULDBLOCK, "lock file replaced")
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.ENOENT):
                raise UserError(
                    f"{what} {target} is in use by another diffpolicy process"
                ) from None
            raise
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)  # while still holding it
    finally:
        os.close(fd)
