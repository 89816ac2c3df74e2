#!/usr/bin/env bash
# mpirun as the tests use it: oversubscription allowed (8 ranks on 2 cores), root allowed in
# containers, shared-memory transport without ptrace-based single copy (blocked in sandboxes).
set -euo pipefail
extra=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_rmaps_base_oversubscribe=1
exec mpirun "${extra[@]}" "$@"
