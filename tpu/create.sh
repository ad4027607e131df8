#!/usr/bin/env bash
# Create a TPU VM or pod slice and install rlft (jax[tpu]) on every worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
usage: tpu/create.sh --name=NAME --zone=ZONE --accelerator-type=TYPE [flags]

Create a Cloud TPU VM (one host, e.g. v4-8, v5e-8) or pod slice (several hosts, e.g. v4-32)
and install rlft with the TPU extra in ~/$REMOTE_DIR/.venv on every worker.

  --name=NAME               TPU name (default \$TPU_NAME)
  --zone=ZONE               e.g. us-central2-b (v4), us-west4-a (v5e) (default \$TPU_ZONE)
  --project=PROJECT         GCP project (default \$TPU_PROJECT, else gcloud's configured one)
  --accelerator-type=TYPE   v4-8, v4-32, v5e-8 (= v5litepod-8), v5p-8, v6e-8, ...
  --version=RUNTIME         TPU VM image (default by family: v4 tpu-ubuntu2204-base,
                            v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  --spot | --preemptible    cheaper capacity that can be reclaimed; tpu/launch.sh recreates it
  --repo-url=URL [--ref=R]  git clone URL (at branch/tag/commit R) on every worker; default:
                            copy a tarball of this checkout (tracked + untracked, not ignored)
  --python=VERSION          Python of the workers' venv, installed by uv (default $PYTHON)
  --install                 only install (the VM exists already): push code, pip install
  --dry-run                 print the commands instead of running them
  -h, --help                this text

example: tpu/create.sh --name=rlft-v4 --zone=us-central2-b --accelerator-type=v4-8 --spot
EOF
}

INSTALL_ONLY=0
parse_script_flag() {
  case $1 in
    install) INSTALL_ONLY=1 ;;
  esac
}

parse_flags "name zone project accelerator-type version spot preemptible repo-url ref python install dry-run" "$@"
((${#EXTRA_ARGS[@]} == 0)) || die "unexpected arguments after --: ${EXTRA_ARGS[*]}"
require_vm_flags
if ((!INSTALL_ONLY)); then
  require_create_flags
  note "create $ACCELERATOR_TYPE ($VERSION) as $NAME in $ZONE${PROVISIONING:+ ($PROVISIONING)}"
  create_vm
fi
note "install rlft[tpu] on every worker"
install_rlft
