#!/usr/bin/env bash
# Installs what the local dev stack needs, idempotently (each step is skipped when already done):
#   1. Debian packages (apt-get; needs root, otherwise prints the sudo command and exits 1)
#   2. Apache Kafka broker jars from Maven Central (deploy/local/kafka/pom.xml) into
#      $PTCE_CACHE_DIR/kafka/libs
#   3. Python test tools from tests/requirements.txt into the venv $PTCE_CACHE_DIR/venv
# Environment:
#   PTCE_CACHE_DIR  cache folder (default: <repo>/.cache)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=$(realpath -m "${PTCE_CACHE_DIR:-$ROOT/.cache}")
POM=$ROOT/deploy/local/kafka/pom.xml
REQS=$ROOT/tests/requirements.txt

PACKAGES=(
  libulfius-dev libmicrohttpd-dev librdkafka-dev check libqpdf-dev qpdf wrk cppcheck clang-format clang-tidy
  libjansson-dev libcurl4-gnutls-dev uuid-dev libssl-dev pkg-config libjemalloc-dev libpq-dev
  postgresql postgresql-contrib openjdk-17-jre-headless maven
  python3 python3-venv curl ca-certificates
)

# 1. Debian packages.
missing=()
for pkg in "${PACKAGES[@]}"; do
  # shellcheck disable=SC2016  # ${Status} is a dpkg-query field, not a shell variable
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "packages: all ${#PACKAGES[@]} already installed"
elif ((EUID != 0)); then
  echo "packages: missing ${missing[*]}; run as root:" >&2
  echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
else
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  echo "packages: installed ${missing[*]}"
fi

# 2. Kafka jars; the stamp names the version pinned in the pom.
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
kafka_dir=$CACHE_DIR/kafka
stamp=$kafka_dir/.fetched-$kafka_version
if [[ -f $stamp ]]; then
  echo "kafka: $kafka_version jars already in $kafka_dir/libs"
else
  rm -rf "$kafka_dir/libs.tmp"
  # Maven 3.8 prints stray colour codes even with -q: keep its output for failures only.
  if ! out=$(mvn -B -q -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$kafka_dir/libs.tmp" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "kafka: fetching the $kafka_version jars failed" >&2
    exit 1
  fi
  rm -rf "$kafka_dir/libs" "$kafka_dir"/.fetched-*   # never mix jars of two versions
  mv "$kafka_dir/libs.tmp" "$kafka_dir/libs"
  touch "$stamp"
  echo "kafka: fetched $kafka_version jars into $kafka_dir/libs ($(du -sh "$kafka_dir/libs" | cut -f1))"
fi

# 3. Python venv; the stamp is the sha256 of the requirements file.
venv=$CACHE_DIR/venv
sum=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ -x $venv/bin/python && $(cat "$venv/.requirements.sha256" 2>/dev/null) == "$sum" ]]; then
  echo "venv: $venv already matches tests/requirements.txt"
else
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  echo "$sum" >"$venv/.requirements.sha256"
  echo "venv: installed tests/requirements.txt into $venv"
fi
