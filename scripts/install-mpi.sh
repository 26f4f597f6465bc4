#!/usr/bin/env bash
# Installs what the `mpi` feature (ferrograd-distributed) needs, from the distribution's packages
# when it is missing: Open MPI (mpirun, mpicc and its headers) and libclang (the `mpi` crate
# generates its bindings with bindgen). Does nothing when they are already there.
#
#   scripts/install-mpi.sh
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_libclang() {
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' ||
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

if command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 && have_libclang; then
  echo "== Open MPI and libclang present: $(mpirun --version 2>&1 | head -n 1)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-mpi.sh: no apt-get here; install Open MPI (mpirun, mpicc, headers) and libclang yourself" >&2
  exit 1
fi
echo "== installing Open MPI and libclang (apt-get)" >&2
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  openmpi-bin libopenmpi-dev libclang-dev pkg-config >/dev/null
mpirun --version 2>&1 | head -n 1 >&2
