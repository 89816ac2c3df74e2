#!/usr/bin/env bash
# Regenerates the key table of docs/CONFIG.md from the config field table (eaglet config --reference).
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(${EAGLET_BIN:-build/eaglet} config --reference)
python3 - "$table" <<'PY'
import re, sys
path = "docs/CONFIG.md"
text = open(path).read()
new = re.sub(r"(<!-- BEGIN KEYS -->\n).*?(<!-- END KEYS -->)", lambda m: m.group(1) + sys.argv[1] + "\n" + m.group(2), text, flags=re.S)
open(path, "w").write(new)
PY
echo "docs/CONFIG.md key table regenerated"
${EAGLET_BIN:-build/eaglet} config --reference-yaml >configs/reference.yaml
echo "configs/reference.yaml regenerated"
