// The dir store: put / get / size / remove, missing and too-large objects, key rules, and
// atomicity (readers racing a writer see whole values only; no temporary files are left).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <set>
#include <thread>

#include "catch.h"
#include "data/dir_store.h"
#include "io/files.h"
#include "test_files.h"

using namespace eaglet::data;
using eaglet::test::error_of;
using eaglet::test::TempDir;

TEST_CASE("dir store: put, size, get, batch get, remove", "[data]") {
  TempDir dir("dirstore");
  DirStore store(dir / "objects/nested");  // created
  const std::string value = "hello, store";
  store.put("k_1", value.data(), static_cast<int64_t>(value.size()));
  CHECK(store.size("k_1") == static_cast<int64_t>(value.size()));
  CHECK(store.exists("k_1"));
  CHECK(store.size("nope") == kMissing);
  CHECK(!store.exists("nope"));
  CHECK(eaglet::test::read_bytes(dir / "objects/nested/k_1") == value);  // one file per key

  std::string buf(64, '\0');
  CHECK(store.get_into("k_1", buf.data(), 64) == static_cast<int64_t>(value.size()));
  CHECK(buf.substr(0, value.size()) == value);

  // Batch: one result per key, missing and too large reported, not thrown.
  const std::string big(100, 'x');
  store.put("big", big.data(), 100);
  std::string a(16, '\0'), b(16, '\0'), c(16, '\0');
  auto got =
      store.batch_get_into({"k_1", "nope", "big"}, {a.data(), b.data(), c.data()}, {16, 16, 16});
  CHECK(got == std::vector<int64_t>{static_cast<int64_t>(value.size()), kMissing, kTooLarge});
  CHECK(error_of([&] {
          store.get_into("nope", a.data(), 16);
        }).find("dir store: object nope is missing") != std::string::npos);
  CHECK(error_of([&] {
          store.get_into("big", a.data(), 16);
        }).find("dir store: object big has 100 bytes, more than the 16-byte buffer") !=
        std::string::npos);

  // Replace, empty value, remove (removing a missing object is fine).
  store.put("k_1", "xy", 2);
  CHECK(store.size("k_1") == 2);
  store.put("empty", "", 0);
  CHECK(store.size("empty") == 0);
  store.remove("k_1");
  CHECK(store.size("k_1") == kMissing);
  store.remove("k_1");
  // No temporary file is left behind.
  for (const auto& name : eaglet::io::list_dir(store.folder())) CHECK(name[0] != '.');
}

TEST_CASE("store keys: any non-empty byte string without NUL", "[data]") {
  CHECK(error_of([] { check_key("Az09_-"); }).empty());
  CHECK(error_of([] { check_key("ultrachat.v2/conv:7_1a2b3c4d"); }).empty());
  CHECK(error_of([] { check_key("../etc"); }).empty());
  CHECK(error_of([] { check_key(std::string(300, 'a')); }).empty());
  CHECK(error_of([] { check_key(""); }).find("store key is empty") != std::string::npos);
  CHECK(error_of([] { check_key(std::string("a\0b", 3)); })
            .find("store key 'a\\0b': byte 1 is NUL, which no backend can store") !=
        std::string::npos);
}

TEST_CASE("dir store file names: an injective escape that keeps old names", "[data]") {
  // Keys of [A-Za-z0-9_-] keep their exact file names (stores written before the escape).
  for (const std::string k : {"k_1", "synth1_000002_usp3_hs", "A-Z_az-09"})
    CHECK(dir_file_name(k) == k);
  CHECK(dir_file_name("a.b") == "a%2Eb");
  CHECK(dir_file_name("a/b") == "a%2Fb");
  CHECK(dir_file_name("..") == "%2E%2E");
  CHECK(dir_file_name("%") == "%25");
  CHECK(dir_file_name("a%2Eb") == "a%252Eb");  // the escape character is escaped itself
  CHECK(dir_file_name("ultrachat.v2/conv:7_1a2b3c4d") == "ultrachat%2Ev2%2Fconv%3A7_1a2b3c4d");
  CHECK(dir_file_name("\xc3\xa9t\xc3\xa9") == "%C3%A9t%C3%A9");  // UTF-8 "été"
  CHECK(error_of([] { dir_file_name(""); }).find("store key is empty") != std::string::npos);

  // Round trip, and every name is one plain file name inside the folder.
  std::vector<std::string> keys = {"a.b",  "a/b", "a:b", "%",     "%25", "..", ".",  "../x",
                                   "/abs", "a b", "\xff\x01", "\xc3\xa9", "a_b", "-", "x%2Fy"};
  for (int c = 1; c < 256; ++c) keys.push_back(std::string(1, static_cast<char>(c)));
  std::set<std::string> names;
  for (const auto& k : keys) {
    const std::string n = dir_file_name(k);
    INFO("key " << k << " -> " << n);
    CHECK(dir_key_of_file(n) == k);
    CHECK(n.find('/') == std::string::npos);
    CHECK((n != "." && n != ".."));
    CHECK(n[0] != '.');
    names.insert(n);
  }
  CHECK(names.size() == std::set<std::string>(keys.begin(), keys.end()).size());  // injective
  // Names the escape never makes are refused (lowercase hex, an escaped plain byte, a cut escape).
  for (const std::string bad : {"a%2eb", "%41", "a%2", "a.b", "%"})
    CHECK(error_of([&] { dir_key_of_file(bad); }).find("is not an escaped key") !=
          std::string::npos);

  // In the store: objects land in the folder under their escaped names, nothing outside.
  TempDir dir("dirstore_keys");
  DirStore store(dir / "s");
  for (const std::string k : {"ultrachat.v2/conv:7_1a2b3c4d_hs", "../escape", "..", "%41", "A"}) {
    store.put(k, k.data(), static_cast<int64_t>(k.size()));
    CHECK(store.size(k) == static_cast<int64_t>(k.size()));
    std::string buf(64, '\0');
    CHECK(store.get_into(k, buf.data(), 64) == static_cast<int64_t>(k.size()));
    CHECK(buf.substr(0, k.size()) == k);
    CHECK(eaglet::io::is_file(store.path_of(k)));
  }
  CHECK(eaglet::io::list_dir(dir.str()) == std::vector<std::string>{"s"});
  auto files = eaglet::io::list_dir(store.folder());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"%2541", "%2E%2E", "%2E%2E%2Fescape", "A",
                                          "ultrachat%2Ev2%2Fconv%3A7_1a2b3c4d_hs"});
  store.remove("../escape");
  CHECK(store.size("../escape") == kMissing);
  // Messages quote the key as given; an escaped name too long for NAME_MAX is refused.
  const std::string longkey(100, '.');
  CHECK(error_of([&] { store.put(longkey, "x", 1); })
            .find("key '" + longkey + "' needs a 300-byte file name once escaped (at most 220") !=
        std::string::npos);
  CHECK(error_of([&] { store.size(std::string("a\0", 2)); }).find("is NUL") != std::string::npos);
}

TEST_CASE("dir store: byte-range reads", "[data]") {
  TempDir dir("dirstore_range");
  DirStore store(dir.str());
  const std::string v = "0123456789";
  store.put("a.b/c", v.data(), 10);
  std::string x(4, '?'), y(4, '?'), z(4, '?');
  auto got = store.batch_get_range_into({"a.b/c", "nope", "a.b/c"}, {3, 0, 8}, {4, 4, 4},
                                        {x.data(), y.data(), z.data()});
  CHECK(got == std::vector<int64_t>{10, kMissing, 10});
  CHECK(x == "3456");
  CHECK(z == "????");  // past the end: size reported, nothing read
  // The generic (whole-object) route gives the same answers.
  std::string w(4, '?');
  got = store.Store::batch_get_range_into({"a.b/c"}, {3}, {4}, {w.data()});
  CHECK(got == std::vector<int64_t>{10});
  CHECK(w == "3456");
}

TEST_CASE("dir store writes are atomic: readers see whole values only", "[data]") {
  TempDir dir("dirstore_atomic");
  DirStore store(dir.str());
  // Value i is i+1 bytes all equal to 'a' + i % 26: a torn read shows a wrong size or mixed bytes.
  auto value = [](int i) { return std::string(static_cast<size_t>(1000 + 37 * i), 'a' + i % 26); };
  store.put("obj", value(0).data(), static_cast<int64_t>(value(0).size()));
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 1; i < 200; ++i) {
      const auto v = value(i);
      store.put("obj", v.data(), static_cast<int64_t>(v.size()));
    }
    done = true;
  });
  int64_t reads = 0, torn = 0;
  std::string buf(1 << 16, '\0');
  while (!done || reads < 10) {
    const int64_t n = store.batch_get_into({"obj"}, {buf.data()}, {1 << 16}).at(0);
    REQUIRE(n > 0);
    const int i = static_cast<int>((n - 1000) / 37);
    if ((n - 1000) % 37 != 0 || buf.substr(0, static_cast<size_t>(n)) != value(i)) ++torn;
    ++reads;
  }
  writer.join();
  CHECK(torn == 0);
  CHECK(reads >= 10);
  for (const auto& name : eaglet::io::list_dir(dir.str())) CHECK(name == "obj");
}

TEST_CASE("open_store: dir, and clear errors for other backends", "[data]") {
  TempDir dir("dirstore_open");
  eaglet::DataConfig cfg;
  cfg.store = "dir";
  cfg.path = dir / "s";
  auto store = open_store(cfg);
  CHECK(std::string(store->backend()) == "dir");
  CHECK(eaglet::io::is_dir(dir / "s"));
  cfg.store = "s3";
  CHECK(error_of([&] {
          open_store(cfg);
        }).find("data.store=s3: unknown store backend (must be one of dir, mooncake)") !=
        std::string::npos);
  cfg.store = "dir";
  cfg.path = "/proc/eaglet-no-such-store";
  CHECK(error_of([&] {
          open_store(cfg);
        }).find("dir store (data.path=/proc/eaglet-no-such-store)") != std::string::npos);
}
