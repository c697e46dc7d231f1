#!/usr/bin/env bash
# rollback.sh — redeploy the previous version (or TAG) with the same health-gated rolling
# procedure as deploy.sh, and the same automatic return to the version that was serving if the
# rollback target does not come up.
#
# Usage: rollback.sh [--with-backup] [--no-smoke] [TAG]
#   TAG            the tag to return to; default: $DEPLOY_STATE_DIR/previous_tag (.deploy/previous_tag)
#   --with-backup  take a pre-rollback backup too (skipped by default: a rollback should be fast,
#                  and the deploy being undone already took one)
# On success current_tag ← TAG and previous_tag ← the tag that was serving, so running
# rollback.sh twice returns to where you started.
#
# Database: a rollback changes binaries only. If the version being undone applied a migration
# the old version cannot work with, revert it first with the NEW binary
# (`ballast migrate down`), or restore the pre-deploy backup (docs/RECOVERY.md).
#
# Environment and runtimes: as deploy.sh (DEPLOY_RUNTIME=compose|native, DEPLOY_STATE_DIR, …).
# Exit codes: as deploy.sh; 0 rolled back, 7 rollback target failed and the version that was
# serving was restored, 8 manual intervention required, 9 no previous tag recorded.
set -euo pipefail

args=()
for a in "$@"; do
  case "$a" in
    --with-backup) export DEPLOY_ROLLBACK_BACKUP=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/deploy.sh" --rollback "${args[@]}"
