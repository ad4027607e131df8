"""Rows from local files as a pyarrow Table: JSONL, Parquet, or a `datasets` save_to_disk folder.

pyarrow does the parsing (`pyarrow.json`, `pyarrow.parquet`, `pyarrow.ipc` for the Arrow stream
files `datasets.Dataset.save_to_disk` writes), so types and malformed lines are pyarrow's to
find; this module names the file and the config field in what it raises.
"""

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from rlft.errors import ConfigError

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}
STATE_FILE = "state.json"  # datasets save_to_disk: {"_data_files": [{"filename": ...}], ...}
DICT_FILE = "dataset_dict.json"  # a DatasetDict's save_to_disk: {"splits": [...]}
MAX_BLOCK = 2**31 - 1  # pyarrow.json's block size is an int32


def _arrow_file(path: str) -> pa.Table:
    """An Arrow IPC stream (what `datasets` writes) or, failing that, an Arrow IPC file."""
    with pa.memory_map(path) as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()


def _disk_folder(path: str, field: str) -> list[str]:
    """The Arrow files of a save_to_disk folder, in state.json's order."""
    if os.path.isfile(os.path.join(path, DICT_FILE)):
        with open(os.path.join(path, DICT_FILE)) as f:
            splits = json.load(f).get("splits", [])
        raise ConfigError(
            f"{field}={path!r} is a DatasetDict folder with splits {splits}; point it at one "
            f"split's folder, e.g. {os.path.join(path, splits[0] if splits else 'train')}"
        )
    state = os.path.join(path, STATE_FILE)
    if os.path.isfile(state):
        with open(state) as f:
            names = [d["filename"] for d in json.load(f).get("_data_files", [])]
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".arrow"))
    if not names:
        raise ConfigError(
            f"{field}={path!r} is a folder without {STATE_FILE} or *.arrow files; expected a "
            "`datasets` save_to_disk folder (or give a .jsonl / .parquet / .arrow file)"
        )
    return [os.path.join(path, n) for n in names]


def data_files(path: str, field: str) -> list[str]:
    """The files `path` stands for (itself, or a save_to_disk folder's Arrow files)."""
    if os.path.isdir(path):
        return _disk_folder(path, field)
    if not os.path.isfile(path):
        raise ConfigError(f"{field}={path!r}: no such file or folder")
    return [path]


def file_stamps(path: str, field: str) -> list[list]:
    """[name, size, mtime_ns] of every file `path` reads: the cache key's view of the data."""
    stamps = []
    for f in data_files(path, field):
        st = os.stat(f)
        stamps.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    return stamps


def read_table(path: str, field: str, max_rows: int = 0) -> pa.Table:
    """The rows of `path` (JSONL, Parquet, Arrow, or a save_to_disk folder), the first
    `max_rows` if > 0. Raises ConfigError naming `field`, the file and pyarrow's reason (a
    malformed JSON line comes back as pyarrow's "... in row N", rows counted from 0)."""
    tables = []
    for f in data_files(path, field):
        kind = SUFFIXES.get(os.path.splitext(f)[1].lower(), "arrow" if os.path.isdir(path) else "")
        if not kind:
            raise ConfigError(
                f"{field}={path!r}: unknown file type; use .jsonl (one JSON object a line), "
                f".parquet, .arrow, or a `datasets` save_to_disk folder"
            )
        try:
            if kind == "jsonl":  # one block, so pyarrow's "in row N" counts from the file's start
                block = min(os.path.getsize(f) + 1, MAX_BLOCK)
                tables.append(pa_json.read_json(f, pa_json.ReadOptions(block_size=block)))
            elif kind == "parquet":
                tables.append(pq.read_table(f))
            else:
                tables.append(_arrow_file(f))
        except (pa.ArrowException, OSError) as e:
            raise ConfigError(f"{f}: cannot read as {kind} ({e}); fix the file") from e
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    if max_rows:
        table = table.slice(0, max_rows)
    if table.num_rows == 0:
        raise ConfigError(f"{field}={path!r} has no rows")
    return table


def first_null(column: pa.ChunkedArray) -> int | None:
    """Index of the first null in `column`, or None."""
    if column.null_count == 0:
        return None
    return pc.index(pc.is_null(column), True).as_py()
