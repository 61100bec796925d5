#!/usr/bin/env bash
# lint.sh — `make lint`: the repository's static checks. Every check runs even when an earlier
# one fails; the script exits 1 when any failed, after a summary.
#   format      clang-format --dry-run -Werror on the C files (.clang-format)
#   cppcheck    cppcheck --enable=warning,performance,portability on the C files
#   tidy        clang-tidy on each .c file with the Makefile's flags (.clang-tidy)
#   openapi     redocly lint api-spec/openapi.yaml (api-spec/redocly.yaml)
#   asyncapi    @asyncapi/parser on api-spec/asyncapi.yaml (tools/asyncapi_validate.cjs)
#   money       no `double` or `float` in a file that includes "money.h" (amounts are cents)
#   compose     dclint (compose-spec schema and rules, deploy/dclint.yaml) and
#               tools/compose_check.py on docker-compose.yml
# The C files are those of common/ services/ tools/ tests/unit.
# Tools: clang-format, cppcheck and clang-tidy are Debian packages (deploy/local/deps.sh); the
# npm tools are installed on first use, at the pinned versions below, into $PTCE_CACHE_DIR/npm;
# the Python check uses the venv that deploy/local/deps.sh fills from tests/requirements.txt.
# Environment:
#   PTCE_CACHE_DIR  cache folder (default: <repo>/.cache)
#   LINT_CHECKS     the checks to run, space-separated (default: all of the above)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=$(realpath -m "${PTCE_CACHE_DIR:-$ROOT/.cache}")
NPM_DIR=$CACHE_DIR/npm
VENV=$CACHE_DIR/venv
NPM_PACKAGES=(@redocly/cli@2.77.0 @asyncapi/parser@3.6.3 dclint@3.1.0)
CHECKS=${LINT_CHECKS:-format cppcheck tidy money openapi asyncapi compose}
cd "$ROOT"

# The C files, found rather than listed so that new files are linted from their first day.
mapfile -t C_FILES < <(find common services tools tests/unit -name '*.[ch]' | sort)
mapfile -t C_SOURCES < <(printf '%s\n' "${C_FILES[@]}" | grep '\.c$')
# The Makefile's CFLAGS, minus the warnings and code generation flags.
read -r -a CFLAGS <<<"-std=c17 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Icommon -Ibuild/gen \
-Iservices $(pkg-config --cflags libpq libulfius)"

# Installs the pinned npm tools once; a changed pin list installs again.
npm_tools() {
    local stamp
    stamp=$NPM_DIR/.installed-$(printf '%s\n' "${NPM_PACKAGES[@]}" | sha256sum | cut -c1-16)
    [[ -f $stamp ]] && return 0
    echo "lint: installing ${NPM_PACKAGES[*]} into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}" \
        >/dev/null
    rm -f "$NPM_DIR"/.installed-*
    touch "$stamp"
}

# Node tools print a deprecation banner for Node 20 on every run; it is not a finding.
node_quiet() { NO_UPDATE_NOTIFIER=1 "$@" 2>&1 | grep -v -e '║' -e '╔' -e '╚' | cat -s; }

check_format() {
    # One finding per file is enough to know which files to run `clang-format -i` on.
    clang-format --dry-run -Werror --ferror-limit=1 "${C_FILES[@]}"
}

check_cppcheck() {
    cppcheck --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
        --std=c11 --library=posix -I common -I services --quiet -j 2 \
        common services tools tests/unit
}

check_tidy() {
    # One file per run: clang-tidy 14 carries analyzer state from one file to the next within
    # a run and then reports a false "uninitialized va_list" in common/config.c.
    printf '%s\n' "${C_SOURCES[@]}" |
        xargs -P 2 -I{} clang-tidy --quiet {} -- "${CFLAGS[@]}" 2>&1 |
        grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter|^Error while processing' |
        tee "$CACHE_DIR/clang-tidy.log"
    ! grep -q -E '(warning|error): ' "$CACHE_DIR/clang-tidy.log"
}

check_money() {
    # Amounts are int64_t cents (common/money.h): a binary floating type near them is a bug
    # waiting for a rounding. Whole words only, comments included, so the rule stays simple.
    local offenders
    offenders=$(grep -l -E '#[[:space:]]*include[[:space:]]*"money\.h"' "${C_FILES[@]}" |
        xargs -r grep -l -w -E 'double|float' || true)
    if [[ -n $offenders ]]; then
        echo "lint: these files include money.h and use double or float:"
        # shellcheck disable=SC2086 # one file name per word
        printf '  %s\n' $offenders
        return 1
    fi
}

check_openapi() {
    npm_tools
    node_quiet "$NPM_DIR/node_modules/.bin/redocly" lint --config api-spec/redocly.yaml \
        --format=stylish api-spec/openapi.yaml
}

check_asyncapi() {
    npm_tools
    NODE_MODULES=$NPM_DIR/node_modules node tools/asyncapi_validate.cjs api-spec/asyncapi.yaml
}

check_compose() {
    local rc=0
    npm_tools
    "$NPM_DIR/node_modules/.bin/dclint" -c deploy/dclint.yaml --max-warnings 0 --color false \
        docker-compose.yml || rc=1
    if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
        echo "lint: no PyYAML in $VENV: run deploy/local/deps.sh (make deps)" >&2
        return 1
    fi
    "$VENV/bin/python" tools/compose_check.py "$ROOT" || rc=1
    return $rc
}

mkdir -p "$CACHE_DIR"
failed=()
for check in $CHECKS; do
    echo "== $check"
    # `if` keeps set -e from stopping at the first failing check; each one reports itself.
    if "check_$check"; then
        echo "ok: $check"
    else
        echo "FAILED: $check"
        failed+=("$check")
    fi
done
if ((${#failed[@]})); then
    echo "lint: ${#failed[@]} check(s) failed: ${failed[*]}"
    exit 1
fi
echo "lint: all checks passed"
