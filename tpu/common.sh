# shellcheck shell=bash
# Shared by tpu/create.sh and tpu/launch.sh: flags, dry-run printing, the gcloud calls that
# create a TPU VM and install rlft on every worker. Sourced, not run.

GCLOUD=${GCLOUD:-gcloud} # tests point this at a fake gcloud
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=$(basename "$0")

DRY_RUN=0
NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR_TYPE=""
VERSION=""
PROVISIONING="" # "", --spot or --preemptible
REPO_URL=""     # git clone this on the workers; empty: copy a tarball of this checkout
REF=""          # branch, tag or commit to check out after cloning
PYTHON=3.11     # the venv's Python (TPU VM images ship 3.10; rlft needs >= 3.11)
REMOTE_DIR=rlft # on each worker, relative to the home directory
EXTRA_ARGS=() # after --: passed on to `rlft train`

die() {
  echo "$SCRIPT: error: $*" >&2
  exit 2
}

note() { echo "# $*"; } # a comment: dry-run output stays a runnable script

# One shell word, quoted only if needed (--flag=value keeps the flag bare).
quote_word() {
  local word=$1 prefix=""
  if [[ $word =~ ^(--[A-Za-z0-9._-]+=)(.*)$ ]]; then
    prefix=${BASH_REMATCH[1]}
    word=${BASH_REMATCH[2]}
  fi
  if [[ $word =~ ^[A-Za-z0-9_./:=,@%+~-]+$ ]]; then
    printf '%s%s' "$prefix" "$word"
  else
    printf "%s'%s'" "$prefix" "${word//\'/\'\\\'\'}"
  fi
}

quote_words() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote_word "$word")"
  done
  printf '%s\n' "$out"
}

# Print the command (dry run) or run it.
run() {
  if ((DRY_RUN)); then
    quote_words "$@"
  else
    echo "+ $(quote_words "$@")" >&2
    "$@"
  fi
}

# parse_flags ALLOWED "$@": sets the globals above; ALLOWED lists the flags a script takes.
parse_flags() {
  local allowed=" $1 " arg flag value
  shift
  while (($#)); do
    arg=$1
    case $arg in
      --)
        shift
        # shellcheck disable=SC2034  # read by launch.sh and create.sh
        EXTRA_ARGS=("$@")
        break
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      --dry-run | --spot | --preemptible | --install)
        flag=${arg#--}
        value=1
        shift
        ;;
      --*=*)
        flag=${arg%%=*}
        flag=${flag#--}
        value=${arg#*=}
        shift
        ;;
      --*)
        flag=${arg#--}
        (($# >= 2)) && [[ $2 != --* ]] || die "--$flag needs a value (see --help)"
        value=$2
        shift 2
        ;;
      *) die "unexpected argument '$arg' (see --help)" ;;
    esac
    [[ $allowed == *" $flag "* ]] || die "unknown flag --$flag (see --help)"
    case $flag in
      dry-run) DRY_RUN=1 ;;
      spot | preemptible)
        [[ -z $PROVISIONING || $PROVISIONING == "--$flag" ]] || die "--spot and --preemptible exclude each other"
        PROVISIONING=--$flag
        ;;
      name) NAME=$value ;;
      zone) ZONE=$value ;;
      project) PROJECT=$value ;;
      accelerator-type) ACCELERATOR_TYPE=$(canonical_accelerator "$value") ;;
      version) VERSION=$value ;;
      repo-url) REPO_URL=$value ;;
      ref) REF=$value ;;
      python) PYTHON=$value ;;
      *) parse_script_flag "$flag" "$value" ;;
    esac
  done
}

# gcloud names v5e slices "v5litepod-N"; accept the marketing name too.
canonical_accelerator() {
  local type=$1
  [[ $type == v5e-* ]] && type=v5litepod-${type#v5e-}
  [[ $type =~ ^v[0-9][a-z]*(pod)?-[0-9]+$ ]] || die "--accelerator-type=$1 is not like v4-8, v5e-8 or v5litepod-8"
  printf '%s\n' "$type"
}

# The TPU VM runtime image for an accelerator family (override with --version).
default_version() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime for $1; pass --version (gcloud compute tpus versions list --zone=$ZONE)" ;;
  esac
}

require_vm_flags() {
  [[ -n $NAME ]] || die "--name is required (or set TPU_NAME)"
  [[ -n $ZONE ]] || die "--zone is required (or set TPU_ZONE)"
}

require_create_flags() {
  [[ -n $ACCELERATOR_TYPE ]] || die "--accelerator-type is required (e.g. v4-8, v5e-8, v4-32)"
  [[ -n $VERSION ]] || VERSION=$(default_version "$ACCELERATOR_TYPE")
}

# Flags every `gcloud compute tpus tpu-vm` call takes.
location_flags() {
  LOCATION=("--zone=$ZONE")
  [[ -z $PROJECT ]] || LOCATION+=("--project=$PROJECT")
}

tpu() {
  location_flags
  local verb=$1
  shift
  run "$GCLOUD" compute tpus tpu-vm "$verb" "$NAME" "${LOCATION[@]}" "$@"
}

create_vm() {
  local flags=("--accelerator-type=$ACCELERATOR_TYPE" "--version=$VERSION")
  [[ -z $PROVISIONING ]] || flags+=("$PROVISIONING")
  tpu create "${flags[@]}"
}

delete_vm() { tpu delete --quiet; }

# One command on every worker of the slice.
on_all_workers() { tpu ssh --worker=all "--command=$1"; }

# The code on every worker: a git clone of --repo-url, or a tarball of this checkout (tracked
# and untracked-but-not-ignored files, so local edits travel too).
fetch_code() {
  if [[ -n $REPO_URL ]]; then
    local dir="\$HOME/$REMOTE_DIR" # expanded on the worker
    local ref # a branch (origin/REF; default the remote's HEAD), else a tag or commit
    ref=$(quote_word "${REF:-HEAD}")
    local update="git -C $dir checkout --quiet --detach origin/$ref 2>/dev/null || git -C $dir checkout --quiet --detach $ref"
    FETCH="if [ -d $dir/.git ]; then git -C $dir fetch --quiet --all --tags; else git clone --quiet $(quote_word "$REPO_URL") $dir; fi
$update"
    return
  fi
  local tarball=${TMPDIR:-/tmp}/$NAME-src.tar.gz pack
  pack="git -C $(quote_word "$REPO_ROOT") ls-files -z --cached --others --exclude-standard | tar -C $(quote_word "$REPO_ROOT") --null -czf $(quote_word "$tarball") -T -"
  if ((DRY_RUN)); then
    echo "$pack"
  else
    echo "+ $pack" >&2
    bash -c "set -o pipefail; $pack"
  fi
  location_flags
  run "$GCLOUD" compute tpus tpu-vm scp "$tarball" "$NAME:rlft.tar.gz" --worker=all "${LOCATION[@]}"
  FETCH="mkdir -p ~/$REMOTE_DIR && tar -xzf ~/rlft.tar.gz -C ~/$REMOTE_DIR"
}

# rlft and jax[tpu] in ~/rlft/.venv on every worker (uv supplies the Python version).
install_rlft() {
  fetch_code
  local venv="\$HOME/$REMOTE_DIR/.venv" # expanded on the worker
  on_all_workers "set -e; $FETCH
cd ~/$REMOTE_DIR
python3 -m pip install --user --quiet --upgrade uv || python3 -m pip install --user --quiet --upgrade --break-system-packages uv
[ -x $venv/bin/python ] || ~/.local/bin/uv venv --seed --python $PYTHON $venv
$venv/bin/python -m pip install --quiet -e \".[tpu]\"
$venv/bin/python -c \"import jax, rlft; print(jax.__version__)\""
}

# READY, CREATING, PREEMPTED, TERMINATED, ... or MISSING when describe fails.
vm_state() {
  location_flags
  local state
  state=$("$GCLOUD" compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(state)' 2>/dev/null) || state=MISSING
  printf '%s\n' "${state:-MISSING}"
}
