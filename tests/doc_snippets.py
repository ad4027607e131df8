"""Fenced code blocks of the repository's Markdown, read and run as a user would run them.

A block is run when its fence says `bash`, `sh`, `shell` or `python`; other fences (plain,
`json`, ...) show files or output and are not run. HTML comments on the lines directly above
a fence (invisible once rendered) say how CI runs it, each with its reason:

    <!-- snippet: skip REASON -->                 not run (cloud, real downloads, accelerators)
    <!-- snippet: slow -->                        run only in the `slow` tier
    <!-- snippet: replace `OLD` -> `NEW` REASON -->  run with OLD replaced by NEW

A document's blocks run in order in one sandbox directory (the repository's LINKED folders
linked in, so relative paths resolve as from the repository root): shell blocks with
`bash -euo pipefail`, Python blocks in one shared namespace, so a later block may use what an
earlier one defined, as a reader following the page would.
"""

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->")
REPLACE = re.compile(r"replace\s+`([^`]*)`\s*->\s*`([^`]*)`\s*(.*)", re.S)
LINKED = (
    "configs",
    "tpu",
    "colab",
    "benchmarks",
)  # what the docs' relative paths expect beside them
CLOUD_TOOLS = ("gcloud", "gsutil", "gcsfuse")  # stubs that fail: a snippet never reaches a cloud


@dataclasses.dataclass
class Block:
    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str  # "shell" or "python"; "" for blocks that are not run
    code: str
    skip: str | None = None  # the reason, when skipped
    slow: bool = False
    replacements: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def runnable_code(self) -> str:
        code = self.code
        for old, new, _ in self.replacements:
            code = code.replace(old, new)
        return code


def parse_marker(text: str, where: str) -> dict:
    """One marker's meaning; raises ValueError naming the place for a malformed one."""
    if text == "slow":
        return {"slow": True}
    if text.startswith("skip"):
        reason = text[len("skip") :].strip(" :-—")
        if not reason:
            raise ValueError(f"{where}: `snippet: skip` needs a reason after it")
        return {"skip": reason}
    m = REPLACE.fullmatch(text)
    if m:
        if not m.group(3).strip():
            raise ValueError(f"{where}: `snippet: replace` needs a reason after it")
        return {"replace": (m.group(1), m.group(2), m.group(3).strip())}
    raise ValueError(
        f"{where}: unknown snippet marker {text!r}; use `skip REASON`, `slow` or "
        "`replace `OLD` -> `NEW` REASON`"
    )


def read_blocks(doc: str) -> list[Block]:
    """Every fenced block of `doc` (relative to ROOT), markers applied; raises ValueError for a
    malformed marker, a replacement whose text is not in its block, or an unclosed fence."""
    with open(os.path.join(ROOT, doc)) as f:
        lines = f.read().splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.fullmatch(line.strip())
        if m:
            pending.append(parse_marker(m.group(1), f"{doc}:{i + 1}"))
            i += 1
            continue
        if line.startswith("```"):
            lang = RUN_LANGS.get(line[3:].strip().lower(), "")
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"{doc}:{i + 1}: fence never closed")
            block = Block(doc, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n")
            for marker in pending:
                block.skip = marker.get("skip", block.skip)
                block.slow |= marker.get("slow", False)
                if "replace" in marker:
                    if marker["replace"][0] not in block.code:
                        raise ValueError(
                            f"{block.where}: replace marker's `{marker['replace'][0]}` is not "
                            "in the block (stale marker?)"
                        )
                    block.replacements.append(marker["replace"])
            if pending and not lang:
                raise ValueError(f"{block.where}: snippet marker on a block that is not run")
            blocks.append(block)
            pending, i = [], end + 1
            continue
        if line.strip():
            pending = []  # markers must sit directly above their fence
        i += 1
    return blocks


def make_sandbox(path: str) -> None:
    """`path` with LINKED folders linked in and failing CLOUD_TOOLS stubs in `path/.bin`."""
    os.makedirs(os.path.join(path, ".bin"), exist_ok=True)
    for name in LINKED:
        link = os.path.join(path, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(ROOT, name), link)
    for tool in CLOUD_TOOLS:
        stub = os.path.join(path, ".bin", tool)
        with open(stub, "w") as f:
            f.write(f"#!/bin/sh\necho '{tool} is not available to doc snippets' >&2\nexit 97\n")
        os.chmod(stub, 0o755)


class SnippetFailed(AssertionError):
    pass


def run_block(block: Block, sandbox: str, namespace: dict, timeout_s: float = 900) -> None:
    """Run one block in `sandbox`; raises SnippetFailed naming the block, with its output."""
    code = block.runnable_code()
    if block.lang == "shell":
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [os.path.join(sandbox, ".bin"), os.path.dirname(sys.executable), env.get("PATH", "")]
        )
        env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=sandbox,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise SnippetFailed(f"{block.where}: still running after {timeout_s} s") from e
        if done.returncode != 0:
            out = (done.stdout + done.stderr)[-4000:]
            raise SnippetFailed(
                f"{block.where}: exit status {done.returncode}\n--- block\n{code}--- output\n{out}"
            )
        return
    with contextlib.chdir(sandbox):
        try:
            exec(compile(code, block.where, "exec"), namespace)  # noqa: S102
        except Exception as e:  # noqa: BLE001 (any error of a documented block fails it)
            tb = "".join(traceback.format_exception(e)[-6:])
            raise SnippetFailed(f"{block.where}: {e!r}\n--- block\n{code}--- error\n{tb}") from e


def run_doc(blocks: list[Block], sandbox: str, include_slow: bool) -> list[str]:
    """Run a document's blocks in order; returns the places run. With include_slow=False the
    document stops before its first slow block (later blocks may depend on it)."""
    make_sandbox(sandbox)
    namespace: dict = {"__name__": "__snippet__"}
    ran = []
    for block in blocks:
        if not block.lang or block.skip:
            continue
        if block.slow and not include_slow:
            break
        run_block(block, sandbox, namespace)
        ran.append(block.where)
    return ran
