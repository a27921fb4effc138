#!/usr/bin/env bash
# The alerting rules an operator copies (dist/prometheus/oomwatch-alerts.yml): promtool
# accepts them, and README.md shows them as they are.
#
#   test/dist/check-rules.sh SOURCE_DIR
#
# Exit 77 (skipped) without promtool, unless OOMWATCH_REQUIRE_KERNEL=1 (CI), which
# installs it through scripts/bootstrap.
set -euo pipefail
src="$1"
rules="$src/dist/prometheus/oomwatch-alerts.yml"
if ! command -v promtool >/dev/null; then
    echo "check-rules: no promtool (Debian's prometheus package)" >&2
    [[ "${OOMWATCH_REQUIRE_KERNEL:-}" == 1 ]] && exit 1
    exit 77
fi
promtool check rules "$rules"
# The README's copy: the yaml block after the marker line, up to the closing fence.
shown="$(awk '/^<!-- oomwatch-alerts.yml -->$/ { on = 1; next } on && /^```yaml$/ { inside = 1; next }
              inside && /^```$/ { exit } inside { print }' "$src/README.md")"
if [[ -z "$shown" ]]; then
    echo "check-rules: README.md shows no rules after '<!-- oomwatch-alerts.yml -->'" >&2
    exit 1
fi
if ! diff <(grep -v '^#' "$rules") <(printf '%s\n' "$shown"); then
    echo "check-rules: README.md's rules differ from $rules (above)" >&2
    exit 1
fi
# The README's own copy passes too (it is the same text without the comment lines).
tmp="$(mktemp --suffix=.yml)"
trap 'rm -f "$tmp"' EXIT
printf '%s\n' "$shown" >"$tmp"
promtool check rules "$tmp"
echo "check-rules: ok"
