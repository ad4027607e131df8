#!/usr/bin/env bash
# Run `rlft train` on every worker of a TPU VM / pod slice; recreate and resume after preemption.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
usage: tpu/launch.sh --name=NAME --zone=ZONE --accelerator-type=TYPE --config=FILE[:VARIANT]
                     --workdir=DIR [flags] [-- extra rlft train flags]

Runs \`rlft train --config=... --workdir=...\` on all workers at once (jax.distributed is set up
from the TPU metadata: RLFT_DISTRIBUTED=1). rlft train resumes from the workdir's latest
checkpoint, so the launcher's loop is: run; if the run did not finish because the VM was
preempted (or stopped, or the ssh session dropped) recreate the VM if needed, reinstall and run
the same command again, up to --max-restarts times. A run that fails on a healthy VM (bad config,
NaN loss) is not retried.

The workdir must outlive the VM and be shared by all workers: gs://BUCKET/PATH, or a path on a
Filestore/NFS or gcsfuse mount present on every worker. A VM's local disk is lost on preemption.

  --name, --zone, --project, --accelerator-type, --version, --spot | --preemptible,
  --repo-url, --ref, --python    as for tpu/create.sh (used when the VM must be (re)created)
  --config=FILE[:VARIANT]   relative to the repo, e.g. configs/sft.py
  --workdir=DIR             e.g. gs://my-bucket/rlft/sft_1.4b
  --install                 push code and reinstall before the first run
  --max-restarts=N          give up after N restarts (default 100)
  --retry-wait=SECONDS      pause before a restart or a failed create (default 60)
  --log=FILE                append all workers' output here (default rlft-NAME.log)
  --dry-run                 print the commands of the loop instead of running them
  -h, --help                this text

example: tpu/launch.sh --name=rlft-v4 --zone=us-central2-b --accelerator-type=v4-32 --spot \\
           --config=configs/sft.py --workdir=gs://my-bucket/sft -- --config.mesh.fsdp=16
EOF
}

CONFIG=""
WORKDIR=""
INSTALL_FIRST=0
MAX_RESTARTS=100
RETRY_WAIT=60
LOG=""
parse_script_flag() {
  case $1 in
    config) CONFIG=$2 ;;
    workdir) WORKDIR=$2 ;;
    install) INSTALL_FIRST=1 ;;
    max-restarts) MAX_RESTARTS=$2 ;;
    retry-wait) RETRY_WAIT=$2 ;;
    log) LOG=$2 ;;
  esac
}

parse_flags "name zone project accelerator-type version spot preemptible repo-url ref python \
config workdir install max-restarts retry-wait log dry-run" "$@"
require_vm_flags
require_create_flags
[[ -n $CONFIG ]] || die "--config=FILE[:VARIANT] is required"
[[ -n $WORKDIR ]] || die "--workdir=DIR is required (gs://BUCKET/PATH or a shared mount)"
[[ $MAX_RESTARTS =~ ^[0-9]+$ && $RETRY_WAIT =~ ^[0-9]+$ ]] || die "--max-restarts and --retry-wait take whole numbers"
LOG=${LOG:-rlft-$NAME.log}
if [[ $WORKDIR != gs://* ]]; then
  echo "$SCRIPT: warning: --workdir=$WORKDIR is not on GCS; it must be a mount shared by all" \
    "workers that survives the VM (Filestore/NFS, gcsfuse), or preemption loses the run." >&2
fi

DONE_MARK="rlft train: done." # printed by `rlft train` when total_steps are reached
PID_FILE="\$HOME/rlft-train.pid"

# On each worker: stop a train process left by a dropped session (SIGTERM: it saves and exits;
# SIGKILL if it has not after 120 s), then become the new one, so a rerun never finds the TPU
# busy.
train_command() {
  local train
  train="\$HOME/$REMOTE_DIR/.venv/bin/rlft $(quote_words train "--config=$CONFIG" \
    "--workdir=$WORKDIR" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})"
  printf '%s\n' "cd ~/$REMOTE_DIR
old=\$(cat $PID_FILE 2>/dev/null || true)
if [ -n \"\$old\" ] && grep -qas rlft /proc/\"\$old\"/cmdline; then # ours, not a reused pid
  kill \"\$old\"; for _ in \$(seq 120); do kill -0 \"\$old\" 2>/dev/null || break; sleep 1; done
  kill -9 \"\$old\" 2>/dev/null || true
fi
echo \$\$ > $PID_FILE
exec env RLFT_DISTRIBUTED=1 $train"
}

recreate() {
  local state=$1
  [[ $state == MISSING ]] || delete_vm || true
  create_vm && install_rlft
}

# Wait for READY, (re)creating the VM when it is missing, preempted or stopped.
ensure_ready() {
  local state
  while :; do
    state=$(vm_state)
    case $state in
      READY) return 0 ;;
      CREATING | STARTING | RESTARTING | REPAIRING) note "$NAME is $state; waiting" ;;
      *)
        note "$NAME is $state: recreating it"
        recreate "$state" && return 0
        next_attempt "create failed"
        ;;
    esac
    sleep "$RETRY_WAIT"
  done
}

ATTEMPT=0
next_attempt() {
  ATTEMPT=$((ATTEMPT + 1))
  if ((ATTEMPT > MAX_RESTARTS)); then
    echo "$SCRIPT: giving up after $MAX_RESTARTS restarts ($1); rerun to continue from the" \
      "latest checkpoint in $WORKDIR" >&2
    exit 1
  fi
  note "restart $ATTEMPT/$MAX_RESTARTS: $1"
}

if ((DRY_RUN)); then
  note "resume loop: repeat until a run prints \"$DONE_MARK\" (at most $MAX_RESTARTS restarts)"
  note "1. state of the VM (READY, PREEMPTED, TERMINATED, ...; missing if describe fails):"
  location_flags
  quote_words "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" "--format=value(state)"
  note "2. if it is not READY (preempted spot VM, stopped, missing): delete, recreate, reinstall"
  delete_vm
  create_vm
  install_rlft
  note "3. run on every worker (SIGTERM on preemption makes rlft save a checkpoint and exit)"
  on_all_workers "$(train_command)"
  note "4. printed \"$DONE_MARK\": stop. VM gone or not READY, or exit 0/255 without it (stopped"
  note "   by SIGTERM, ssh dropped): sleep $RETRY_WAIT s, go to 1; rlft train resumes the workdir."
  note "   Any other failure on a READY VM: stop with its exit code."
  exit 0
fi

if ((INSTALL_FIRST)) && [[ $(vm_state) == READY ]]; then
  install_rlft
fi
while :; do
  ensure_ready
  attempt_log=$(mktemp)
  note "run $((ATTEMPT + 1)): rlft train --config=$CONFIG --workdir=$WORKDIR on all workers"
  set +e
  on_all_workers "$(train_command)" 2>&1 | tee "$attempt_log" | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  finished=0
  grep -qF "$DONE_MARK" "$attempt_log" && finished=1
  rm -f "$attempt_log"
  if ((rc == 0 && finished)); then
    note "finished: $WORKDIR"
    exit 0
  fi
  state=$(vm_state)
  if [[ $state != READY ]]; then
    next_attempt "VM $state (exit $rc)"
  elif ((rc == 0 || rc == 255)); then
    next_attempt "stopped on a READY VM (exit $rc: SIGTERM or a dropped ssh session)"
  else
    echo "$SCRIPT: rlft train failed with exit $rc on a READY VM; not retrying (see $LOG)" >&2
    exit "$rc"
  fi
  sleep "$RETRY_WAIT"
done
