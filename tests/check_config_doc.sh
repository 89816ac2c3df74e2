#!/usr/bin/env bash
# Fails when docs/CONFIG.md's key table differs from `eaglet config --reference` (the field table).
set -euo pipefail
eaglet=$1 doc=$2
want=$("$eaglet" config --reference)
got=$(sed -n '/<!-- BEGIN KEYS -->/,/<!-- END KEYS -->/p' "$doc" | sed '1d;$d')
if [ "$want" != "$got" ]; then
  echo "docs/CONFIG.md is out of date; regenerate the table with: eaglet config --reference"
  diff <(echo "$want") <(echo "$got") || true
  exit 1
fi
echo "docs/CONFIG.md matches the config field table"
