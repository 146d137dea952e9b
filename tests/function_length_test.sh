#!/usr/bin/env bash
# Lint (CTest label `lint`): no function in server/*.cc or client/*.cc is
# longer than 150 lines. Fails listing every one that is, longest first, as
# "LINES path:line name". Function extents come from Universal Ctags
# (--fields=+ne gives each definition's first and last line); Debian's
# package is universal-ctags (packaging/install-deps.sh installs it).
#
#   tests/function_length_test.sh [SOURCE_DIR]    (default: this checkout)
#
# CAIRN_MAX_FUNCTION_LINES overrides the limit.
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
max=${CAIRN_MAX_FUNCTION_LINES:-150}

ctags=""
for c in ctags-universal universal-ctags ctags; do
  if command -v "$c" >/dev/null && "$c" --version 2>/dev/null | grep -q 'Universal Ctags'; then
    ctags=$c
    break
  fi
done
if [ -z "$ctags" ]; then
  echo "function_length_test: Universal Ctags not found (Debian: apt-get install universal-ctags," \
    "or bash packaging/install-deps.sh)" >&2
  exit 1
fi

cd "$root"
shopt -s nullglob
files=(server/*.cc client/*.cc)
if [ ${#files[@]} -eq 0 ]; then
  echo "function_length_test: no server/*.cc or client/*.cc under $root" >&2
  exit 1
fi

# One line per function definition: name, file, then extension fields; the
# pattern field may hold anything, so fields are found by their prefix.
long=$("$ctags" --fields=+ne --c++-kinds=f -o - "${files[@]}" |
  awk -F'\t' -v max="$max" '
    {
      line = ""; end = ""; scope = ""
      for (i = 4; i <= NF; i++) {
        if ($i ~ /^line:/) line = substr($i, 6)
        else if ($i ~ /^end:/) end = substr($i, 5)
        else if ($i ~ /^(class|struct|namespace):/) scope = substr($i, index($i, ":") + 1) "::"
      }
      if (line != "" && end != "" && end - line + 1 > max)
        printf "%d %s:%s %s%s\n", end - line + 1, $2, line, scope, $1
    }' | sort -rn)

if [ -n "$long" ]; then
  echo "functions longer than $max lines (split them: one function per command or step):"
  echo "$long"
  exit 1
fi
echo "function_length_test: every function in server/*.cc and client/*.cc has at most $max lines"
