#!/usr/bin/env bash
# scripts/checks/shellcheck.sh — runs shellcheck on every shell script in the repository:
# all *.sh files plus extension-less files whose shebang names sh/bash/dash/ksh (e.g. .ci/run),
# found with `git ls-files` (tracked and untracked-but-not-ignored), or `find` outside a git
# checkout. Each file is checked on its own (following `source` directives relative to the
# repository root and the script's directory).
#
# Usage: scripts/checks/shellcheck.sh [FILE...]     (default: every shell script)
# Env:   SHELLCHECK_SEVERITY (style) — minimum severity reported (error|warning|info|style)
# Prints one line per file and "shellcheck: N passed, M failed"; exits 1 when any file fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

command -v shellcheck >/dev/null 2>&1 || ensure_apt shellcheck
command -v shellcheck >/dev/null 2>&1 || die "shellcheck is not installed"

cd "$ROOT"

is_shell() { # FILE: a *.sh file, or a shebang naming a Bourne-family shell
  case "$1" in *.sh|*.bash) return 0 ;; esac
  local first
  first="$(head -c 128 "$1" 2>/dev/null | head -n1 || true)"
  [[ "$first" =~ ^#![[:space:]]*(/usr)?(/local)?/bin/(env[[:space:]]+)?(ba|da|k)?sh([[:space:]]|$) ]]
}

files=()
if [ $# -gt 0 ]; then
  files=("$@")
else
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t candidates < <(git ls-files --cached --others --exclude-standard | sort -u)
  else
    mapfile -t candidates < <(find . -type f -not -path './.git/*' -not -path './target/*' | sed 's#^\./##' | sort)
  fi
  for f in "${candidates[@]}"; do
    [ -f "$f" ] || continue                         # deleted but still in the index
    case "$f" in target/*|*/node_modules/*|.git/*) continue ;; esac
    is_shell "$f" && files+=("$f")
  done
fi

passed=0 failed=0
for f in "${files[@]}"; do
  if out="$(shellcheck -x --source-path=SCRIPTDIR --source-path="$ROOT" \
              --severity="${SHELLCHECK_SEVERITY:-style}" "$f" 2>&1)"; then
    passed=$((passed + 1)); printf 'ok   - %s\n' "$f"
  else
    failed=$((failed + 1)); printf 'FAIL - %s\n' "$f"
    printf '%s\n' "$out" | sed 's/^/    | /'
  fi
done
[ ${#files[@]} -gt 0 ] || log "no shell scripts found"
echo "shellcheck: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
