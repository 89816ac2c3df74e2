#!/usr/bin/env bash
# Fails when docs/CONFIG.md's key table or configs/reference.yaml differ from the config field
# table (eaglet config --reference / --reference-yaml); scripts/gen_config_doc.sh regenerates both.
set -euo pipefail
eaglet=$1 doc=$2 ref=$3
want=$("$eaglet" config --reference)
got=$(sed -n '/<!-- BEGIN KEYS -->/,/<!-- END KEYS -->/p' "$doc" | sed '1d;$d')
status=0
if [ "$want" != "$got" ]; then
  echo "docs/CONFIG.md is out of date; regenerate with scripts/gen_config_doc.sh"
  diff <(echo "$want") <(echo "$got") || true
  status=1
fi
if ! diff <("$eaglet" config --reference-yaml) "$ref" >/dev/null; then
  echo "configs/reference.yaml is out of date; regenerate with scripts/gen_config_doc.sh"
  diff <("$eaglet" config --reference-yaml) "$ref" || true
  status=1
fi
[ $status = 0 ] && echo "docs/CONFIG.md and configs/reference.yaml match the config field table"
exit $status
