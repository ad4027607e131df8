"""tpu/*.sh without a cloud: --dry-run output, flag errors, and the resume loop on a fake gcloud."""

import os
import shlex
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(REPO, "tpu")
SCRIPTS = ("create.sh", "launch.sh")
LAUNCH = [
    "--name=rlft-pod",
    "--zone=us-central2-b",
    "--project=my-proj",
    "--accelerator-type=v4-32",
    "--spot",
    "--repo-url=https://example.com/rlft.git",
    "--config=configs/sft.py:tiny",
    "--workdir=gs://my-bucket/runs/sft",
]


@pytest.fixture(autouse=True)
def no_real_gcloud(tmp_path_factory, monkeypatch):
    """A `gcloud` first on PATH that fails: a script that wrongly leaves dry-run mode must not
    reach the real one."""
    bin_dir = tmp_path_factory.mktemp("bin")
    stub = bin_dir / "gcloud"
    stub.write_text("#!/bin/sh\necho 'real gcloud called from a test' >&2\nexit 97\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GCLOUD", raising=False)


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", os.path.join(TPU, script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _commands(stdout: str) -> list[list[str]]:
    """The dry-run's commands (comments dropped), each split into shell words."""
    return [shlex.split(c, comments=True) for c in _statements(stdout)]


def _statements(stdout: str) -> list[str]:
    """Join quoted multi-line arguments back into whole commands."""
    out, current = [], ""
    for line in stdout.splitlines():
        if not current and (not line.strip() or line.startswith("#")):
            continue
        current = f"{current}\n{line}" if current else line
        try:
            shlex.split(current)
        except ValueError:  # an open quote: the command continues on the next line
            continue
        out.append(current)
        current = ""
    assert not current, f"unterminated command: {current}"
    return out


def _gcloud(commands: list[list[str]], verb: str) -> list[list[str]]:
    return [
        c for c in commands if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and c[4] == verb
    ]


def _flag(command: list[str], name: str) -> str | None:
    for word in command:
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
    return None


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = _run(script, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: tpu/{script}")
    assert "--dry-run" in out.stdout


def test_create_single_host_v5e():
    out = _run(
        "create.sh",
        "--name=rlft-1",
        "--zone=us-west4-a",
        "--accelerator-type=v5e-8",
        "--repo-url=https://example.com/rlft.git",
        "--ref=v0.1",
        "--dry-run",
    )
    assert out.returncode == 0, out.stderr
    commands = _commands(out.stdout)
    [create] = _gcloud(commands, "create")
    assert create[5] == "rlft-1"
    assert _flag(create, "accelerator-type") == "v5litepod-8"  # gcloud's name for v5e-8
    assert _flag(create, "version") == "v2-alpha-tpuv5-lite"
    assert _flag(create, "zone") == "us-west4-a" and _flag(create, "project") is None
    assert "--spot" not in create and "--preemptible" not in create
    [install] = _gcloud(commands, "ssh")
    assert "--worker=all" in install
    script = _flag(install, "command")
    assert "git clone --quiet https://example.com/rlft.git $HOME/rlft" in script
    assert "checkout --quiet --detach v0.1" in script
    assert 'pip install --quiet -e ".[tpu]"' in script
    assert "uv venv --seed --python 3.11" in script
    assert not _gcloud(commands, "scp")


def test_create_pod_slice_spot_from_local_tarball():
    out = _run(
        "create.sh",
        "--name",
        "rlft-pod",
        "--zone",
        "us-central2-b",
        "--project",
        "my-proj",
        "--accelerator-type",
        "v4-32",
        "--spot",
        "--dry-run",
    )
    assert out.returncode == 0, out.stderr
    commands = _commands(out.stdout)
    [create] = _gcloud(commands, "create")
    assert _flag(create, "accelerator-type") == "v4-32"
    assert _flag(create, "version") == "tpu-ubuntu2204-base"
    assert _flag(create, "project") == "my-proj" and "--spot" in create
    [pack] = [c for c in commands if c[0] == "git"]
    assert "ls-files" in pack and "tar" in pack
    [scp] = _gcloud(commands, "scp")
    assert "--worker=all" in scp
    assert scp[5:7] == [pack[pack.index("-czf") + 1], "rlft-pod:rlft.tar.gz"]
    [install] = _gcloud(commands, "ssh")
    assert "--worker=all" in install
    assert "tar -xzf ~/rlft.tar.gz -C ~/rlft" in _flag(install, "command")


def test_install_only_skips_create():
    out = _run("create.sh", "--name=x", "--zone=z", "--install", "--dry-run")
    assert out.returncode == 0, out.stderr
    commands = _commands(out.stdout)
    assert not _gcloud(commands, "create") and len(_gcloud(commands, "ssh")) == 1


def test_launch_dry_run_prints_the_resume_loop():
    out = _run("launch.sh", *LAUNCH, "--dry-run", "--", "--config.mesh.fsdp=16", "--config.x=a b")
    assert out.returncode == 0, out.stderr
    assert "resume loop" in out.stdout and "rlft train: done." in out.stdout
    commands = _commands(out.stdout)
    [describe] = _gcloud(commands, "describe")
    assert _flag(describe, "format") == "value(state)"
    [delete] = _gcloud(commands, "delete")
    assert "--quiet" in delete
    [create] = _gcloud(commands, "create")
    assert "--spot" in create and _flag(create, "accelerator-type") == "v4-32"
    install, train = _gcloud(commands, "ssh")
    assert "--worker=all" in install and "--worker=all" in train
    # The train command is one shell line on the worker: check its words.
    remote = _flag(train, "command").splitlines()
    [launch] = [shlex.split(line) for line in remote if line.startswith("exec ")]
    assert launch[:3] == ["exec", "env", "RLFT_DISTRIBUTED=1"]
    assert launch[3].endswith("/rlft/.venv/bin/rlft") and launch[4] == "train"
    assert launch[5:] == [
        "--config=configs/sft.py:tiny",
        "--workdir=gs://my-bucket/runs/sft",
        "--config.mesh.fsdp=16",
        "--config.x=a b",
    ]
    # The printed plan is itself a valid bash script.
    assert subprocess.run(["bash", "-n"], input=out.stdout, text=True).returncode == 0


def test_local_workdir_warns():
    args = [a for a in LAUNCH if not a.startswith("--workdir")] + ["--workdir=/tmp/run"]
    out = _run("launch.sh", *args, "--dry-run")
    assert out.returncode == 0 and "not on GCS" in out.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--zone=z", "--accelerator-type=v4-8"], "--name is required"),
        (["--name=n", "--accelerator-type=v4-8"], "--zone is required"),
        (["--name=n", "--zone=z"], "--accelerator-type is required"),
        (["--name=n", "--zone=z", "--accelerator-type=v4"], "is not like v4-8"),
        (["--name=n", "--zone=z", "--accelerator-type=v2-8"], "pass --version"),
        (["--name=n", "--zone=z", "--accelerator-type=v4-8", "--spot", "--preemptible"], "exclude"),
        (
            ["--name=n", "--zone=z", "--accelerator-type=v4-8", "--workdir=w"],
            "unknown flag --workdir",
        ),
        (["--name=n", "--zone=z", "--accelerator-type=v4-8", "--ref"], "--ref needs a value"),
    ],
)
def test_create_flag_errors(args, message):
    out = _run("create.sh", *args, "--dry-run")
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_launch_requires_config_and_workdir():
    no_workdir = [a for a in LAUNCH if not a.startswith("--workdir")]
    out = _run("launch.sh", *no_workdir, "--dry-run")
    assert out.returncode == 2 and "--workdir=DIR is required" in out.stderr


# --- the resume loop against a fake gcloud --------------------------------------------------

FAKE_GCLOUD = """\
#!{python}
# Records every call; simulates a TPU VM whose train runs follow FAKE_RUNS, one outcome a line.
import json, os, sys
args = sys.argv[1:]
state_file, runs_file = os.environ["FAKE_STATE"], os.environ["FAKE_RUNS"]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
state = open(state_file).read().strip()
verb = args[3]
def set_state(s):
    open(state_file, "w").write(s)
if verb == "describe":
    if state == "MISSING":
        sys.exit(1)
    print(state)
elif verb == "create":
    set_state("READY")
elif verb == "delete":
    set_state("MISSING")
elif verb == "ssh" and "rlft train" in " ".join(args):
    runs = open(runs_file).read().split()
    outcome, rest = runs[0], runs[1:]
    open(runs_file, "w").write("\\n".join(rest))
    if outcome == "done":
        print("rlft train: done. gs://b/run/metrics.jsonl, last: step=8, loss=1.2")
    elif outcome == "preempt":  # the VM goes away mid-run; ssh loses the connection
        set_state("PREEMPTED")
        print("rlft train: stopped by SIGTERM at step 5; checkpoint saved.")
        sys.exit(255)
    elif outcome == "sigterm":  # stopped cleanly, VM still READY (maintenance, manual kill)
        print("rlft train: stopped by SIGTERM at step 5; checkpoint saved.")
    else:
        print("rlft train: error: config.dpo.betta is unknown", file=sys.stderr)
        sys.exit(1)
"""


@pytest.fixture
def fake_gcloud(tmp_path):
    gcloud = tmp_path / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)
    paths = {k: tmp_path / k.lower() for k in ("FAKE_STATE", "FAKE_RUNS", "FAKE_CALLS")}
    paths["FAKE_CALLS"].write_text("")

    def launch(state: str, runs: list[str], *extra: str):
        paths["FAKE_STATE"].write_text(state)
        paths["FAKE_RUNS"].write_text("\n".join(runs))
        env = {"GCLOUD": str(gcloud), **{k: str(v) for k, v in paths.items()}}
        args = [*LAUNCH, "--retry-wait=0", f"--log={tmp_path / 'run.log'}", *extra]
        out = _run("launch.sh", *args, env=env)
        import json  # noqa: PLC0415

        calls = [json.loads(line) for line in paths["FAKE_CALLS"].read_text().splitlines()]
        verbs = [c[3] + (":train" if "rlft train" in " ".join(c) else "") for c in calls]
        return out, verbs, calls

    return launch


def test_launch_recreates_a_preempted_vm_and_resumes(fake_gcloud):
    out, verbs, calls = fake_gcloud("READY", ["preempt", "done"])
    assert out.returncode == 0, out.stderr
    assert verbs == [
        "describe",
        "ssh:train",  # first run, preempted
        "describe",
        "describe",
        "delete",
        "create",
        "ssh",  # PREEMPTED: recreate, reinstall
        "ssh:train",  # the same command on the same workdir: rlft train resumes
    ]
    trains = [c for c in calls if "rlft train" in " ".join(c)]
    assert trains[0] == trains[1] and "--workdir=gs://my-bucket/runs/sft" in trains[0][-1]
    [create] = [c for c in calls if c[3] == "create"]
    assert "--spot" in create and "--accelerator-type=v4-32" in create
    assert "restart 1/100: VM PREEMPTED (exit 255)" in out.stdout


def test_launch_creates_a_missing_vm_first(fake_gcloud):
    out, verbs, _ = fake_gcloud("MISSING", ["done"])
    assert out.returncode == 0, out.stderr
    assert verbs == ["describe", "create", "ssh", "ssh:train"]


def test_launch_reruns_after_sigterm_on_a_ready_vm(fake_gcloud):
    out, verbs, _ = fake_gcloud("READY", ["sigterm", "done"])
    assert out.returncode == 0, out.stderr
    assert verbs == ["describe", "ssh:train", "describe", "describe", "ssh:train"]


def test_launch_does_not_retry_a_failing_run(fake_gcloud):
    out, verbs, _ = fake_gcloud("READY", ["fail", "done"])
    assert out.returncode == 1 and "not retrying" in out.stderr
    assert verbs == ["describe", "ssh:train", "describe"]


def test_launch_gives_up_after_max_restarts(fake_gcloud):
    out, verbs, _ = fake_gcloud("READY", ["preempt", "preempt", "done"], "--max-restarts=1")
    assert out.returncode == 1 and "giving up after 1 restarts" in out.stderr
    assert verbs.count("ssh:train") == 2 and verbs.count("create") == 1


FAKE_RLFT = """\
#!/usr/bin/env bash
# Stands in for ~/rlft/.venv/bin/rlft: logs start/stop; blocks (a run whose ssh dropped) when
# $HOME/block exists; saves and exits on SIGTERM like rlft train.
trap 'echo "saved $$" >> "$HOME/events"; exit 0' TERM
echo "start $$ $RLFT_DISTRIBUTED $*" >> "$HOME/events"
if [ -f "$HOME/block" ]; then rm "$HOME/block"; while :; do sleep 0.1; done; fi
echo "done $$" >> "$HOME/events"
"""


def test_worker_command_stops_a_leftover_run_first(tmp_path):
    out = _run("launch.sh", *LAUNCH, "--dry-run")
    [train] = [c for c in _gcloud(_commands(out.stdout), "ssh") if "rlft train" in " ".join(c)]
    remote = _flag(train, "command")
    rlft = tmp_path / "rlft" / ".venv" / "bin" / "rlft"
    rlft.parent.mkdir(parents=True)
    rlft.write_text(FAKE_RLFT)
    rlft.chmod(0o755)
    (tmp_path / "block").touch()
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    events = tmp_path / "events"
    leftover = subprocess.Popen(["bash", "-c", remote], env=env)
    # Reap it as soon as it exits (on a worker, init does): a zombie would still answer kill -0.
    reaper = threading.Thread(target=leftover.wait, daemon=True)
    reaper.start()
    for _ in range(100):
        if events.exists() and events.read_text():
            break
        time.sleep(0.1)
    rerun = subprocess.run(["bash", "-c", remote], env=env, timeout=60)
    reaper.join(timeout=10)
    assert rerun.returncode == 0 and leftover.returncode == 0
    lines = events.read_text().splitlines()
    args = "1 train --config=configs/sft.py:tiny --workdir=gs://my-bucket/runs/sft"
    assert lines[0] == f"start {leftover.pid} {args}"
    assert lines[1] == f"saved {leftover.pid}"  # SIGTERM: it checkpoints before the rerun
    assert lines[2].startswith("start ") and lines[2].endswith(args) and lines[3].startswith("done")
