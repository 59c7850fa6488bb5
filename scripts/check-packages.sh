#!/usr/bin/env bash
# Checks that a build only includes system headers its package list installs:
#   scripts/check-packages.sh BUILD_DIR LIST...
# Every header under /usr that BUILD_DIR's objects were compiled against (ninja's deps log,
# and any compiler depfile left beside the objects) must belong to a Debian package that is in
# one of the named lists of scripts/common.sh (GRAFT_PACKAGES, GRAFT_TEST_PACKAGES) or that
# those packages pull in (Depends and Pre-Depends, recursively; not Recommends). A header of no
# package, or of one outside that closure, is printed with its package, and the check fails:
# on a fresh machine the build would not find it. CI installs every list, so a build that
# passes there can still fail for a user who installed one; this check is what sees it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR LIST..." >&2; exit 2; }
build=$1; shift
[ -d "$build" ] || { echo "graft: check-packages: no build folder $build" >&2; exit 2; }

packages=()
for list in "$@"; do
  declare -n ref="$list"
  packages+=("${ref[@]}")
  unset -n ref
done

# Headers the build read, as absolute paths under /usr.
headers=$(
  { ninja -C "$build" -t deps 2>/dev/null || true
    find "$build" -name '*.d' -type f -print0 | xargs -0 -r cat; } |
  tr ' \\' '\n\n' | sed 's/^[[:space:]]*//' | grep '^/usr/' | sort -u || true)
if [ -z "$headers" ]; then
  echo "graft: check-packages: $build has no dependency information (built with ninja?)" >&2
  exit 2
fi
# Through symbolic links (/usr/lib/x86_64-linux-gnu/... -> /usr/include/...), the path dpkg knows.
resolved=$(printf '%s\n' $headers | xargs -r realpath -e 2>/dev/null | sort -u)

# The closure of the lists: each package and everything it depends on.
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances "${packages[@]}" 2>/dev/null |
          grep -v '^ ' | sed 's/:.*$//' | sort -u)
[ -n "$closure" ] || { echo "graft: check-packages: apt-cache knows none of: ${packages[*]} (run apt-get update)" >&2; exit 2; }

# Owner of each header (dpkg -S prints "pkg[:arch][, pkg2]: path"), then each header whose
# packages are all outside the closure, once per package, and each header no package owns.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$closure" >"$tmp/closure"
printf '%s\n' $resolved >"$tmp/headers"
xargs -r dpkg -S <"$tmp/headers" 2>/dev/null | grep -v '^diversion' >"$tmp/owned" || true
awk '
  FILENAME == ARGV[1] { ok[$0] = 1; next }
  FILENAME == ARGV[2] {
    k = index($0, ": "); path = substr($0, k + 2)
    m = split(substr($0, 1, k - 1), ps, ", *"); good = 0; names = ""
    for (j = 1; j <= m; j++) { sub(/:.*/, "", ps[j]); if (ps[j] in ok) good = 1; names = names (j > 1 ? ", " : "") ps[j] }
    has[path] = 1
    if (!good && !(names in seen)) { seen[names] = 1; print path " (package: " names ")" }
    next
  }
  !($0 in has) { print $0 " (no Debian package owns it)" }
' "$tmp/closure" "$tmp/owned" "$tmp/headers" >"$tmp/bad"
mapfile -t bad <"$tmp/bad"

n=$(printf '%s\n' $resolved | wc -l)
if [ ${#bad[@]} -gt 0 ]; then
  echo "graft: check-packages: $build includes headers that ${*} do not install:"
  printf '  %s\n' "${bad[@]}"
  echo "  add each package to its list in scripts/common.sh"
  exit 1
fi
echo "graft: check-packages: the $n system headers $build includes all come from ${*} (${#packages[@]} packages, $(wc -l <<<"$closure") with their dependencies)"
