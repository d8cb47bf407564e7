"""Writing the output directory: every file replaced atomically and only when its bytes
changed, under a lock; stale category and story files removed.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from aggregator.errors import PublishError
from aggregator.publish.text import _STORY_PAGE, FEED_FILES, PAGE, STORY_DIR

# ----------------------------------------------------------------------------- files


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Atomically replace each file whose bytes differ; return those replaced.

    All temp files are written first, then fsynced, then renamed: the fsyncs share journal
    commits (a 20-category publish takes a third of the time of write-fsync-rename per
    file) and the new files appear together. Temp files are dotfiles in the same
    directory (``.rss.xml.XXXX.tmp``: never served), removed on any failure; those a
    killed publisher left behind go at the next publish, which holds a lock on the
    output directory so it never removes another publisher's. A directory that can't be
    written (read-only, full, a file in its place) is a PublishError and every old file
    stays as it was.
    """
    if not files:
        return []
    root = Path(os.path.commonpath([p.parent for p in files]))
    staged: list[tuple[Path, str]] = []
    try:
        with _publish_lock(root):
            for directory in {p.parent for p in files}:
                _remove_leftovers(directory)
            try:
                for path, data in files.items():
                    try:
                        if path.read_bytes() == data:
                            continue
                    except FileNotFoundError:
                        pass
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                               suffix=".tmp")
                    staged.append((path, tmp))
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.chmod(tmp, 0o644)
                for _, tmp in staged:
                    _fsync(tmp)
                for path, tmp in staged:
                    os.replace(tmp, path)
            finally:
                for _, tmp in staged:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
    except OSError as e:
        where = e.filename or root
        raise PublishError(f"cannot write {where}: {e.strerror or e}") from e
    return [path for path, _ in staged]


_LEFTOVER = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp\Z")  # tempfile.mkstemp's names, above


def _remove_leftovers(directory: Path) -> None:
    try:
        names = [n for n in os.listdir(directory) if _LEFTOVER.match(n)]
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass


@contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    """One publisher at a time per output directory (the daemon, an `aggregator
    publish` beside it): a lock on the directory itself, no lock file; the kernel
    drops the lock of a killed process."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_categories(out_dir: Path, keep: set[str]) -> list[Path]:
    """Drop the files of categories that no longer exist (only files this module writes)."""
    removed: list[Path] = []
    root = out_dir / "category"
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.name in keep or not d.is_dir():
            continue
        for name in (*FEED_FILES, PAGE):
            p = d / name
            if p.exists():
                p.unlink()
                removed.append(p)
        try:
            d.rmdir()
        except OSError:
            pass  # something else lives there: leave it
    return removed


def _remove_stale_stories(out_dir: Path, keep: set[str]) -> list[Path]:
    """Drop the story pages of stories no longer on a page (only ``<id>.html``)."""
    removed: list[Path] = []
    root = out_dir / STORY_DIR
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if _STORY_PAGE.match(p.name) and p.name not in keep and p.is_file():
            p.unlink()
            removed.append(p)
    return removed


