"""The database in Datasette: a reader for the SQLite file while the daemon writes it.

``aggregator datasette`` starts Datasette on the file with the shipped
metadata (``data/datasette-metadata.json``: titles, every documented column,
canned queries). Datasette opens a file in one of two ways: *immutable*
(``-i``: SQLite is told the file never changes, so it skips locking and may
cache; wrong, even unsafe, for a file another process writes) or *mutable*,
its default, where every query runs on a ``mode=ro`` connection that takes
the normal shared locks and sees each transaction the daemon commits (WAL
mode: readers never block the writer, nor it them). Ours is the mutable
mode; Datasette without plugins has no way to write to it.

Datasette names a database by its file's stem, and its metadata is keyed by
that name: the shipped metadata (written for ``aggregator``) is renamed to fit
the file given, into a temporary file that lives as long as Datasette runs.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import signal
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from aggregator.errors import AggregatorError

__all__ = ["METADATA", "command", "is_available", "metadata", "serve"]

METADATA = "datasette-metadata.json"
_TEMPLATE_NAME = "aggregator"
INSTALL_HINT = "pip install 'aggregator[datasette]'"


def is_available() -> bool:
    return importlib.util.find_spec("datasette") is not None


def metadata(db: Path) -> dict[str, Any]:
    """The shipped metadata, for the database Datasette will call ``db.stem``."""
    text = resources.files("aggregator").joinpath("data", METADATA).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    databases = data.get("databases", {})
    if _TEMPLATE_NAME in databases and db.stem != _TEMPLATE_NAME:
        databases[db.stem] = databases.pop(_TEMPLATE_NAME)
    return data


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def command(db: Path, metadata_file: Path, *, host: str, port: int) -> list[str]:
    """The Datasette command line: mutable (``mode=ro``) mode, never ``-i``. The file
    goes absolute: a relative name starting with "-" (``--root``) is an option to it."""
    return [sys.executable, "-m", "datasette", "serve", str(Path(db).absolute()), "--metadata",
            str(Path(metadata_file).absolute()), f"--host={host}", f"--port={port}"]


def serve(db: Path, *, host: str = "127.0.0.1", port: int = 8001) -> int:
    """Run Datasette on ``db`` until it exits (Ctrl-C, SIGTERM); its exit status."""
    if not is_available():
        raise AggregatorError(f"datasette is not installed ({INSTALL_HINT})")
    with tempfile.TemporaryDirectory(prefix="aggregator-datasette-") as tmp:
        meta = Path(tmp) / METADATA
        meta.write_text(json.dumps(metadata(db), ensure_ascii=False), "utf-8")
        proc = subprocess.Popen(command(db, meta, host=host, port=port))
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # stop it with us
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Datasette got the same Ctrl-C: let it finish
            return proc.wait()
