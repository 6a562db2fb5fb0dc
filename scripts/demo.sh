#!/usr/bin/env bash
# The whole release on the embedded base, as `make demo` runs it:
#   1. train the shipping recipe and check it: every required gate passes;
#   2. promote it to production;
#   3. train the quick recipe, which forgets, and check it: rejected, and its
#      rollback gate drills the production version (restore + replay);
#   4. diff the two verdicts and show the version history.
# A rejected candidate is the demo working; usage (2) and internal (3) errors stop it.
set -euo pipefail
GK=${GK:-.venv/bin/gatekeeper}
NAME=support-ticket-json
started=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m  (at %d s)\n' "$*" "$(( $(date +%s) - started ))"; }
check() {  # check BUNDLE EXPECTED_EXIT: 0 ships, 1 rejected; anything else stops the demo
  local code=0
  "$GK" check "$1" || code=$?
  if [ "$code" -ne 0 ] && [ "$code" -ne 1 ]; then exit "$code"; fi
  if [ "$code" -ne "$2" ]; then
    echo "demo: expected exit $2 from checking $1, got $code (see the report above)" >&2
    exit 1
  fi
}
report_of() { echo "reports/$NAME/$(basename "$1")"; }

step "1/4 train the shipping recipe (distillation rehearsal)"
ship=$("$GK" train adapters/$NAME/recipe.yaml)
step "    check $ship"
check "$ship" 0

step "2/4 promote $ship to production"
"$GK" promote "$ship" --channel production

step "3/4 train the quick recipe, which forgets"
quick=$("$GK" train adapters/$NAME-quick/recipe.yaml)
step "    check $quick (its rollback gate drills the production version)"
check "$quick" 1

step "4/4 what changed between the two, and the history"
diff_html="reports/diffs/$NAME-$(basename "$ship")--$(basename "$quick").html"
"$GK" diff "$ship" "$quick" --html "$diff_html"
"$GK" history "$NAME"

cat <<DONE

shipped:  $ship  (report: $(report_of "$ship")/report.html)
rejected: $quick (report: $(report_of "$quick")/report.html)
diff:     $diff_html
history:  adapters/versions.sqlite (gatekeeper history $NAME)
demo took $(( $(date +%s) - started )) s
DONE
