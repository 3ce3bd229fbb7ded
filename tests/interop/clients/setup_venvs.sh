#!/usr/bin/env bash
# Creates the Python client venvs used by tests/interop (idempotent; fast when already done):
#   <dir>/aetcd  aetcd 1.0.0 (asyncio client) on current grpcio/protobuf
#   <dir>/etcd3  etcd3 0.12.0, which needs protobuf 3.20.x: its generated code predates protobuf 4
# Each client bundles etcd's protos under the same module names as ours (etcdserverpb...), so each
# lives in its own venv and runs as a subprocess. <dir> defaults to <repo>/.venv-clients.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$(cd "$here/../../.." && pwd)/.venv-clients}"
mkdir -p "$dir"

# venv name | pinned requirements | import check
make_venv() {
  local name="$1" reqs="$2" check="$3"
  local venv="$dir/$name" stamp="$dir/$name/.requirements"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$reqs" ] \
      && "$venv/bin/python" -c "$check" 2>/dev/null; then
    return 0
  fi
  echo "setup_venvs: creating $venv ($reqs)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086  # $reqs is a list of requirement specifiers
  "$venv/bin/pip" install -q --disable-pip-version-check $reqs
  "$venv/bin/python" -c "$check"
  echo "$reqs" > "$stamp"
}

make_venv aetcd "aetcd==1.0.0 grpcio==1.85.1 protobuf==7.36.2" "import aetcd"
make_venv etcd3 "etcd3==0.12.0 grpcio==1.85.1 protobuf==3.20.3 tenacity==9.2.1 six==1.17.0" "import etcd3"
