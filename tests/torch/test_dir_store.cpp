// The dir store: put / get / size / remove, missing and too-large objects, key rules, and
// atomicity (readers racing a writer see whole values only; no temporary files are left).
#include <atomic>
#include <cstring>
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

TEST_CASE("store keys use only [A-Za-z0-9_-]", "[data]") {
  CHECK(error_of([] { check_key("Az09_-"); }).empty());
  CHECK(error_of([] { check_key(""); }).find("store key is empty") != std::string::npos);
  CHECK(error_of([] { check_key("a.b"); })
            .find("store key 'a.b': character 1 ('.') is not allowed (keys use only "
                  "[A-Za-z0-9_-])") != std::string::npos);
  CHECK(error_of([] { check_key("../etc"); }).find("is not allowed") != std::string::npos);
  CHECK(error_of([] { check_key(std::string(300, 'a')); }).find("300 characters long") !=
        std::string::npos);
  TempDir dir("dirstore_keys");
  DirStore store(dir.str());
  CHECK(error_of([&] { store.put("a/b", "x", 1); }).find("store key 'a/b'") != std::string::npos);
  CHECK(error_of([&] { store.size("a b"); }).find("store key 'a b'") != std::string::npos);
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
