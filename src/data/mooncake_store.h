// The `mooncake` store backend (DESIGN §2): a real Mooncake Store reached through Mooncake's own
// client, `mooncake.store.MooncakeDistributedStore` from the mooncake-transfer-engine wheel, driven
// by a CPython interpreter embedded at run time (libpython is dlopen'ed, nothing of Python or
// Mooncake is linked into eaglet). Why this route, and the wheel's needs: docs/MOONCAKE.md.
#pragma once

#include <memory>

#include "data/store.h"

namespace eaglet::data {

// Opens a Mooncake client with the data.mooncake_* keys (master, metadata server, protocol, RDMA
// devices, advertised hostname, lent segment, local transfer buffer). Before touching Mooncake it
// checks that the master (and an http/etcd/redis metadata server) accept a TCP connection within
// 5 s, so a wrong address fails at once with the address and the reason instead of after
// Mooncake's own 90 s of retries.
//
// The Python used is the first of these that can import mooncake.store: the interpreter whose
// PyTorch provides eaglet's LibTorch (where scripts/setup.sh installs the wheel), then `python3`
// on PATH. Errors name what is missing (no Python, no shared libpython, the wheel, a system
// library such as libibverbs.so.1) and what to do.
//
// Semantics on top of Mooncake's: put() replaces an existing object (Mooncake's own put keeps the
// old value silently; eaglet uses upsert); remove() is forced (a reader's lease does not block
// data.consume) and a missing object is not an error; an empty object cannot be stored.
// Buffers given to register_buffer() must stay allocated until the store is destroyed. With the
// rdma protocol an unregistered buffer goes through a registered staging buffer (one extra copy);
// tcp reads straight into any host memory.
// Thread-safe: calls may come from several threads (each takes the Python GIL around the call into
// Mooncake, which releases it during transfers).
std::unique_ptr<Store> open_mooncake_store(const DataConfig& cfg);

}  // namespace eaglet::data
