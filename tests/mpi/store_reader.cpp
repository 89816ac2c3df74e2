// Test reader for a store a producer filled (tests/mpi/mooncake_roundtrip.sh): every rank opens the
// store the config names (data.store: dir or mooncake), reads only its own shard objects
// `{key}_usp{s}_hs|_ids|_lhs` (s = rank % P) of every manifest sample, and compares sizes and bytes
// with the files the producer saved (EXPECT/<object key>). Then it checks the Store contract on a
// scratch key of its own (put, replace, size, kMissing, kTooLarge, get_into errors, remove), also
// from several threads at once.
// usage: store_reader --config FILE [--set key=value]... --expect DIR [--consume]
//   --consume: remove each object after reading it and check that it is gone.
// Prints one line per failure and, on rank 0, "store_reader: ... N failed: PASS|FAIL"; exits 0 only
// when every rank passed (2 when the store cannot be opened, on every rank).
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "data/sharding.h"
#include "data/store.h"
#include "dist/mpi_env.h"

namespace {

using eaglet::data::Store;

std::string read_file(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  *ok = static_cast<bool>(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Checker {
  int64_t rank;
  int64_t checks = 0;
  std::vector<std::string> failures;
  void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) failures.push_back(what);
  }
};

// The shard objects of every manifest sample for this rank.
// `buffer` is registered with the store once, sized for the largest sample, and outlives the
// store (a registration must not outlive its memory).
void check_samples(Store& store, const eaglet::Config& cfg, const std::string& expect_dir,
                   bool consume, std::vector<char>& buffer, Checker& c) {
  const int64_t P = cfg.parallel.ulysses * cfg.parallel.ring;
  const int64_t s = c.rank % P;
  const std::string manifest =
      cfg.data.manifest.empty() ? cfg.data.path + "/manifest.jsonl" : cfg.data.manifest;
  std::ifstream in(manifest);
  EAGLET_CHECK(static_cast<bool>(in), "store_reader: manifest {} cannot be read", manifest);
  std::vector<std::pair<int64_t, nlohmann::json>> lines;
  int64_t largest = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    auto g = eaglet::data::shard_geometry(j.at("seq_len"), cfg.data.max_seq_length, P,
                                          cfg.training.ttt_length);
    largest = std::max<int64_t>(largest, g.local_len * 4 * j.at("hidden_size").get<int64_t>() * 2 +
                                             g.local_len * 8 + 3 * 64);
    lines.emplace_back(static_cast<int64_t>(lines.size()) + 1, std::move(j));
  }
  buffer.assign(static_cast<size_t>(std::max<int64_t>(largest, 4096)), 0);
  store.register_buffer(buffer.data(), static_cast<int64_t>(buffer.size()));
  int64_t samples = 0;
  for (const auto& [line_no, j] : lines) {
    const std::string key = j.at("key");
    const std::string where = fmt::format("{}:{} ({})", manifest, line_no, key);
    c.expect(j.at("sp_size") == P,
             fmt::format("{}: sp_size {} != {}", where, j.at("sp_size").dump(), P));
    c.expect(j.at("ttt_length") == cfg.training.ttt_length,
             fmt::format("{}: ttt_length {} != {}", where, j.at("ttt_length").dump(),
                         cfg.training.ttt_length));
    c.expect(j.at("max_seq_length") == cfg.data.max_seq_length,
             fmt::format("{}: max_seq_length {} != {}", where, j.at("max_seq_length").dump(),
                         cfg.data.max_seq_length));
    c.expect(j.at("num_aux") == 3, fmt::format("{}: num_aux {}", where, j.at("num_aux").dump()));
    const int64_t ht = j.at("hidden_size");
    auto g = eaglet::data::shard_geometry(j.at("seq_len"), cfg.data.max_seq_length, P,
                                          cfg.training.ttt_length);
    auto info = eaglet::data::check_packed_loss_mask(j.at("packed_loss_mask"));
    c.expect(info.length == j.at("seq_len"),
             fmt::format("{}: packed_loss_mask covers {} tokens, seq_len {}", where, info.length,
                         j.at("seq_len").dump()));

    // One batch of this rank's three objects into one registered buffer.
    std::vector<std::string> keys;
    std::vector<int64_t> sizes;
    for (auto obj : eaglet::data::kShardObjects)
      keys.push_back(eaglet::data::object_key(key, s, obj));
    sizes = {g.local_len * 3 * ht * 2, g.local_len * 8, g.local_len * ht * 2};
    std::vector<void*> ptrs;
    std::vector<int64_t> caps;
    int64_t offset = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      c.expect(store.size(keys[i]) == sizes[i],
               fmt::format("{}: size {} != expected {} (rank {})", keys[i], store.size(keys[i]),
                           sizes[i], c.rank));
      ptrs.push_back(buffer.data() + offset);
      caps.push_back(sizes[i] + 64);  // room to see an object that is too long
      offset += sizes[i] + 64;
    }
    std::memset(buffer.data(), 0xA5, static_cast<size_t>(offset));
    auto got = store.batch_get_into(keys, ptrs, caps);
    for (size_t i = 0; i < keys.size(); ++i) {
      bool ok = false;
      std::string want = read_file(expect_dir + "/" + keys[i], &ok);
      c.expect(ok, fmt::format("{}: no expected bytes at {}/{}", keys[i], expect_dir, keys[i]));
      c.expect(got[i] == sizes[i] && got[i] == static_cast<int64_t>(want.size()),
               fmt::format("{}: read {} bytes, manifest says {}, producer wrote {} (rank {})",
                           keys[i], got[i], sizes[i], want.size(), c.rank));
      if (got[i] == static_cast<int64_t>(want.size()))
        c.expect(std::memcmp(ptrs[i], want.data(), want.size()) == 0,
                 fmt::format("{}: bytes differ from what the producer wrote (rank {})", keys[i],
                             c.rank));
      if (consume) {
        store.remove(keys[i]);
        c.expect(!store.exists(keys[i]), fmt::format("{}: still there after remove", keys[i]));
      }
    }
    ++samples;
  }
  c.expect(samples > 0, fmt::format("manifest {} has no samples", manifest));
}

// The Store contract on a scratch key only this rank uses.
void check_contract(Store& store, std::vector<char>& out, Checker& c) {
  const std::string key = fmt::format("eaglet_store_reader_r{}", c.rank);
  const std::string missing = fmt::format("eaglet_store_reader_missing_r{}", c.rank);
  std::vector<char> a(1000), b(300);
  out.assign(2000, 0);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<char>(i * 7 + c.rank);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 13 + 1);
  store.register_buffer(out.data(), static_cast<int64_t>(out.size()));
  store.register_buffer(out.data(), static_cast<int64_t>(out.size()));  // again: no error
  store.register_buffer(out.data() + 100, 100);                         // inside: no error
  store.remove(key);
  store.remove(missing);
  c.expect(!store.exists(key), key + ": exists before put");
  store.put(key, a.data(), static_cast<int64_t>(a.size()));
  c.expect(store.size(key) == 1000,
           fmt::format("{}: size {} after a 1000-byte put", key, store.size(key)));
  int64_t n = store.get_into(key, out.data(), static_cast<int64_t>(out.size()));
  c.expect(n == 1000 && std::memcmp(out.data(), a.data(), a.size()) == 0, key + ": get after put");
  store.put(key, b.data(), static_cast<int64_t>(b.size()));  // replaces
  c.expect(store.size(key) == 300,
           fmt::format("{}: size {} after replacing with 300 bytes", key, store.size(key)));
  n = store.get_into(key, out.data(), static_cast<int64_t>(out.size()));
  c.expect(n == 300 && std::memcmp(out.data(), b.data(), b.size()) == 0,
           key + ": get after replace");
  auto r = store.batch_get_into({key, missing, key},
                                {out.data(), out.data() + 400, out.data() + 800}, {10, 100, 300});
  c.expect(r[0] == eaglet::data::kTooLarge,
           fmt::format("{}: 10-byte buffer gave {}, want kTooLarge", key, r[0]));
  c.expect(r[1] == eaglet::data::kMissing,
           fmt::format("{}: gave {}, want kMissing", missing, r[1]));
  c.expect(r[2] == 300, fmt::format("{}: exact-size buffer gave {}", key, r[2]));
  c.expect(store.size(missing) == eaglet::data::kMissing, missing + ": size of a missing key");
  try {
    store.get_into(missing, out.data(), 100);
    c.expect(false, missing + ": get_into of a missing key did not throw");
  } catch (const eaglet::Error& e) {
    c.expect(std::string(e.what()).find(missing) != std::string::npos,
             fmt::format("get_into error does not name the key: {}", e.what()));
  }
  // Any key but one with a NUL byte (issue 21): SGLang-path keys round-trip on every backend.
  try {
    store.put(std::string("bad\0key", 7), a.data(), 10);
    c.expect(false, "put of a key with a NUL byte did not throw");
  } catch (const eaglet::Error&) {
    c.expect(true, "");
  }
  const std::string path_key = key + ".v2/conv:7_1a2b";
  store.put(path_key, a.data(), 10);
  c.expect(store.size(path_key) == 10, path_key + ": size after put is not 10");
  store.remove(path_key);
  c.expect(!store.exists(path_key), path_key + ": exists after remove");
  store.remove(key);
  c.expect(!store.exists(key), key + ": exists after remove");
  store.remove(key);  // removing a missing object is not an error
}

// Several threads at once on their own keys (a prefetch thread beside the main one): no deadlock,
// no mixed-up bytes. Buffers are not registered (the backend must cope either way).
void check_threads(Store& store, Checker& c) {
  constexpr int kThreads = 4, kRounds = 25;
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        const std::string key = fmt::format("eaglet_store_reader_r{}_t{}", c.rank, t);
        std::vector<char> in(4096 + t * 1000), out(in.size());
        for (int round = 0; round < kRounds; ++round) {
          for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<char>(i * 31 + round + t);
          store.put(key, in.data(), static_cast<int64_t>(in.size()));
          int64_t n = store.get_into(key, out.data(), static_cast<int64_t>(out.size()));
          if (n != static_cast<int64_t>(in.size()) || std::memcmp(in.data(), out.data(), in.size()))
            throw std::runtime_error(fmt::format("{}: round {} read back other bytes", key, round));
        }
        store.remove(key);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t)
    c.expect(errors[t].empty(), fmt::format("thread {}: {}", t, errors[t]));
}

}  // namespace

int main(int argc, char** argv) {
  eaglet::MpiEnv env(&argc, &argv);
  std::string config, expect;
  std::vector<std::string> sets;
  bool consume = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config = argv[++i];
    } else if (a == "--set" && i + 1 < argc) {
      sets.push_back(argv[++i]);
    } else if (a == "--expect" && i + 1 < argc) {
      expect = argv[++i];
    } else if (a == "--consume") {
      consume = true;
    } else {
      if (env.rank() == 0)
        std::cerr << "usage: store_reader --config FILE [--set k=v]... --expect DIR [--consume]\n";
      return 2;
    }
  }
  eaglet::Config cfg;
  std::vector<char> sample_buffer, scratch_buffer;  // registered: destroyed after the store
  std::unique_ptr<Store> store;
  try {
    env.agree([&] {
      EAGLET_CHECK(!config.empty() && !expect.empty(),
                   "store_reader: --config and --expect are required");
      cfg = eaglet::load_config(config, sets);
      eaglet::check_valid(cfg, env.size());
      store = eaglet::data::open_store(cfg.data);
    });
  } catch (const eaglet::Error& e) {
    if (env.rank() == 0) std::cerr << "store_reader: " << e.what() << "\n";
    return 2;
  }
  Checker c{env.rank()};
  try {
    check_samples(*store, cfg, expect, consume, sample_buffer, c);
    check_contract(*store, scratch_buffer, c);
    check_threads(*store, c);
  } catch (const std::exception& e) {
    c.failures.push_back(fmt::format("exception: {}", e.what()));
  }
  for (const auto& f : c.failures) std::cerr << "FAIL [rank " << c.rank << "] " << f << "\n";
  long long local[2] = {c.checks, static_cast<long long>(c.failures.size())}, total[2] = {0, 0};
  MPI_Allreduce(local, total, 2, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (env.rank() == 0)
    std::cout << fmt::format("store_reader: {} store, {} checks on {} ranks, {} failed: {}\n",
                             store->backend(), total[0], env.size(), total[1],
                             total[1] == 0 ? "PASS" : "FAIL")
              << std::flush;
  store.reset();
  return total[1] == 0 ? 0 : 1;
}
