"""Whole-file writes that a kill cannot leave half done: write a temporary file beside the
target, then rename it over the target (atomic on a local filesystem; an object store such as
gs:// publishes an object only once its upload completes)."""

import os

from etils import epath


def replace_file(path: epath.Path, data: bytes | str) -> None:
    """Write `data` to `path` through `<path>.tmp<pid>` and a rename; a reader (or a resumed run
    after SIGKILL) sees either the old file or the new one, never a prefix."""
    path = epath.Path(path)
    tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
