#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster:
#
#   scripts/with-postgres.sh cargo test -p ferrograd-tuning --features postgres
#
# Installs the server from the distribution's packages when it is missing (apt-get), initialises
# a cluster under a fresh temporary directory, starts it on 127.0.0.1 on a free non-default port,
# exports its URL as FERROGRAD_PG_URL (database `ferrograd`, user `postgres`, no password), runs
# the command, then stops the cluster and deletes the directory whatever happened. The exit status
# is the command's.
#
# The server runs as a non-root user (PostgreSQL refuses root): when started as root, the system
# user `ferrograd-pg` (created with useradd if missing), else the current user. It is a test
# cluster: fsync and synchronous commit are off.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pg_bin() {
  # The newest installed server version.
  find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

bin="$(pg_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "== installing PostgreSQL (apt-get)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin="$(pg_bin)"
fi

if [ "$(id -u)" -eq 0 ]; then
  owner=ferrograd-pg
  if ! id -u "$owner" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$owner"
  fi
  run_pg() { runuser -u "$owner" -- "$@"; }
  # The server's user must reach the directory: TMPDIR may be private to root.
  parent="${TMPDIR:-/tmp}"
  run_pg test -w "$parent" -a -x "$parent" 2>/dev/null || parent=/tmp
  dir="$(mktemp -d "$parent/ferrograd-pg.XXXXXX")"
  chown "$owner" "$dir"
else
  run_pg() { "$@"; }
  dir="$(mktemp -d "${TMPDIR:-/tmp}/ferrograd-pg.XXXXXX")"
fi

cleanup() {
  run_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

run_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}

started=
for _ in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 40000))
  port_free "$port" || continue
  if run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  echo "PostgreSQL did not start; its log:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi

run_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres ferrograd
export FERROGRAD_PG_URL="postgresql://postgres@127.0.0.1:$port/ferrograd"
echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $FERROGRAD_PG_URL" >&2

status=0
"$@" || status=$?
exit "$status"
