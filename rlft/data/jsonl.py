"""JSONL read line by line: one JSON object a line, blank lines skipped, errors naming file:line.

The files people hand rlft (prompts, reference responses, judgments, the TL;DR downloads) are
read here; the files data source parses its JSONL with pyarrow instead (rlft.data.tables).
"""

import json
import os
from collections.abc import Iterator
from typing import Any

from etils import epath


def jsonl_rows(
    path: str | os.PathLike,
    example: str = "",
    error: type[ValueError] = ValueError,
    only: set[int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, object) of each non-blank line (of lines `only`, if given).

    Raises `error` naming `path:line` for a line that is not valid JSON or not an object,
    followed by `example` (a line of the expected form), if given; OSError for a missing file.
    """
    hint = f", e.g. {example}" if example else ""
    with epath.Path(path).open("r") as f:
        for line_no, line in enumerate(f, 1):
            if (only is not None and line_no not in only) or not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(
                    f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); "
                    f"expected one JSON object a line{hint}"
                ) from None
            if not isinstance(obj, dict):
                raise error(
                    f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}{hint}"
                )
            yield line_no, obj
