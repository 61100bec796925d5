#!/usr/bin/env bash
# run.sh — `make run`: the whole stack in the foreground on .state; Ctrl-C stops it cleanly.
# A second run keeps the data (the state folder is kept between runs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
STACK=$ROOT/deploy/local/stack.sh

trap '"$STACK" down; exit 0' INT TERM
"$STACK" up "$BUILD"
eval "$("$STACK" env | sed 's/^/export /')"
cat <<MSG

PTCE platform is running (state in ${PTCE_STATE_DIR:-$ROOT/.state}):
  submission   $PTCE_URL_SUBMISSION   (healthz, readyz, metrics, /v1/…)
  instruction  $PTCE_URL_INSTRUCTION
  funding      $PTCE_URL_FUNDING
  PostgreSQL   $PTCE_ADMIN_DATABASE_URL
  Kafka        $PTCE_KAFKA_BROKERS
Create an API key:  PTCE_ADMIN_DATABASE_URL='$PTCE_ADMIN_DATABASE_URL' $BUILD/ptce-admin key create --role national_admin --regions all
Logs: ${PTCE_STATE_DIR:-$ROOT/.state}/services/*.log. Press Ctrl-C to stop everything.
MSG
while sleep 3600; do :; done &
wait $!
