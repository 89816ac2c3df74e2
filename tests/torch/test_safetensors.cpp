// safetensors: bit-exact round trips of every dtype, metadata, sharded folders, every header
// error naming the file and the tensor, and interop with the Python `safetensors` package.
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

#include <cstring>
#include <limits>

#include "catch.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "test_files.h"

using eaglet::io::SafetensorsFile;
using eaglet::io::SafetensorsSet;
using eaglet::io::write_safetensors;
using eaglet::test::error_of;
using eaglet::test::TempDir;

namespace {

template <typename T>
at::Tensor make(std::vector<T> values, std::vector<int64_t> shape, c10::ScalarType type) {
  return at::from_blob(values.data(), shape, c10::CppTypeToScalarType<T>::value).clone().to(type);
}

// The same tensors as `known` in the Python scripts below: exactly representable values, the
// integer extremes, a 0-d scalar and an empty tensor.
std::vector<std::pair<std::string, at::Tensor>> known_tensors() {
  std::vector<double> f64, f32, f16, bf16;
  for (int i = 0; i < 12; ++i) f64.push_back(i / 8.0), f32.push_back(i / 8.0 - 1);
  for (int i = 0; i < 6; ++i) f16.push_back(i / 4.0), bf16.push_back(i * -0.5);
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  return {
      {"f64", make(f64, {3, 4}, c10::kDouble)},
      {"f32", make(f32, {3, 4}, c10::kFloat)},
      {"f16", make(f16, {2, 3}, c10::kHalf)},
      {"bf16", make(bf16, {6}, c10::kBFloat16)},
      {"i64", make(std::vector<int64_t>{lo, hi, 0, 7}, {4}, c10::kLong)},
      {"i32", make(std::vector<int32_t>{0, -3, -6, -9, -12}, {5}, c10::kInt)},
      {"i16", make(std::vector<int16_t>{-32768, 32767}, {2}, c10::kShort)},
      {"i8", make(std::vector<int8_t>{-128, 127, 0}, {3}, c10::kChar)},
      {"u8", make(std::vector<uint8_t>{0, 255, 17}, {3}, c10::kByte)},
      {"bool", make(std::vector<uint8_t>{1, 0, 1, 1}, {4}, c10::kBool)},
      {"scalar", make(std::vector<float>{2.5f}, {}, c10::kFloat)},
      {"empty", make(std::vector<float>{}, {0, 3}, c10::kFloat)},
  };
}

// Same dtype, shape and bytes (NaN payloads and -0 included).
bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.nbytes() == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

// A safetensors file from a header text and data bytes; `header_len` overrides the length field.
std::string raw_file(const std::string& header, const std::string& data, int64_t header_len = -1) {
  uint64_t n = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit-exactly", "[io][safetensors]") {
  TempDir dir("st_roundtrip");
  auto tensors = known_tensors();
  // Float bit patterns that value comparisons would miss: NaN with a payload, -0, inf, subnormal.
  uint32_t nan_bits = 0x7fc01234u;
  float nan;
  std::memcpy(&nan, &nan_bits, 4);
  tensors.emplace_back(
      "f32_special",
      make(std::vector<float>{nan, -0.0f, std::numeric_limits<float>::infinity(), 1e-40f}, {4},
           c10::kFloat));
  tensors.emplace_back("bf16_special", make(std::vector<uint16_t>{0x7fc1, 0x8000, 0x0001, 0xff80},
                                            {2, 2}, c10::kUInt16)
                                           .view(c10::kBFloat16));
  tensors.emplace_back(
      "f16_special", make(std::vector<uint16_t>{0x7e01, 0x8000, 0x0001, 0x7c00}, {4}, c10::kUInt16)
                         .view(c10::kHalf));
  // A non-contiguous view is written as its logical (row-major) values.
  tensors.emplace_back("transposed",
                       make(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {2, 3}, c10::kInt).t());

  const std::string path = dir / "all.safetensors";
  write_safetensors(path, tensors);
  SafetensorsFile f(path);
  REQUIRE(f.tensors().size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO("tensor " << name);
    at::Tensor back = f.get(name);
    CHECK(same_bytes(back, t.contiguous()));
  }
  // Known values, independent of the writer: the extremes and the transposed order.
  at::Tensor i64 = f.get("i64");
  CHECK(i64.data_ptr<int64_t>()[0] == std::numeric_limits<int64_t>::min());
  CHECK(i64.data_ptr<int64_t>()[1] == std::numeric_limits<int64_t>::max());
  at::Tensor tr = f.get("transposed");
  CHECK(tr.sizes() == c10::IntArrayRef({3, 2}));
  CHECK(std::vector<int32_t>(tr.data_ptr<int32_t>(), tr.data_ptr<int32_t>() + 6) ==
        std::vector<int32_t>{1, 4, 2, 5, 3, 6});
  CHECK(f.info("bf16").dtype == "BF16");
  CHECK(f.info("bool").dtype == "BOOL");
  CHECK(f.info("scalar").shape.empty());
  // The header is padded with spaces so the data start 8-byte aligned, and no .tmp is left.
  std::string bytes = eaglet::test::read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(header_len % 8 == 0);
  CHECK(bytes[0 + 8] == '{');
  CHECK(!eaglet::io::path_exists(path + ".tmp"));
}

TEST_CASE("safetensors: metadata round-trips", "[io][safetensors]") {
  TempDir dir("st_meta");
  const std::string path = dir / "m.safetensors";
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "42"}, {"note", "a \"q\""}};
  write_safetensors(path, {{"x", make(std::vector<float>{1, 2}, {2}, c10::kFloat)}}, meta);
  SafetensorsFile f(path);
  CHECK(f.metadata() == meta);
  CHECK(f.tensors().size() == 1);  // __metadata__ is not a tensor

  SECTION("a file without metadata has none") {
    write_safetensors(path, {{"x", make(std::vector<float>{1}, {1}, c10::kFloat)}});
    CHECK(SafetensorsFile(path).metadata().empty());
  }
}

TEST_CASE("safetensors: sharded folder through model.safetensors.index.json", "[io][safetensors]") {
  TempDir dir("st_sharded");
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {{"a.weight", make(std::vector<float>{1, 2, 3, 4}, {2, 2}, c10::kFloat)},
                     {"b.weight", make(std::vector<int64_t>{5, 6}, {2}, c10::kLong)}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"c.weight", make(std::vector<float>{7, 8, 9}, {3}, c10::kBFloat16)}});
  eaglet::test::write_bytes(dir / "model.safetensors.index.json", R"({
    "metadata": {"total_size": 46},
    "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                   "b.weight": "model-00001-of-00002.safetensors",
                   "c.weight": "model-00002-of-00002.safetensors"}})");
  SafetensorsSet set(dir.str());
  CHECK(set.names() == std::vector<std::string>{"a.weight", "b.weight", "c.weight"});
  CHECK(set.has("c.weight"));
  CHECK(!set.has("d.weight"));
  at::Tensor c = set.get("c.weight", {3});
  CHECK(c.scalar_type() == c10::kBFloat16);
  CHECK(same_bytes(c, make(std::vector<float>{7, 8, 9}, {3}, c10::kBFloat16)));
  CHECK(set.get("b.weight").data_ptr<int64_t>()[1] == 6);
  CHECK(set.get("a.weight").data_ptr<float>()[3] == 4.0f);

  SECTION("a missing tensor names the folder, the tensor and some available ones") {
    std::string msg = error_of([&] { set.get("d.weight"); });
    INFO(msg);
    CHECK(msg.find(dir.str()) != std::string::npos);
    CHECK(msg.find("'d.weight'") != std::string::npos);
    CHECK(msg.find("a.weight") != std::string::npos);
  }
  SECTION("a wrong shape names the shard, the tensor and both shapes") {
    std::string msg = error_of([&] { set.get("a.weight", {4}); });
    INFO(msg);
    CHECK(msg.find(dir / "model-00001-of-00002.safetensors") != std::string::npos);
    CHECK(msg.find("'a.weight'") != std::string::npos);
    CHECK(msg.find("[2, 2]") != std::string::npos);
    CHECK(msg.find("[4]") != std::string::npos);
  }
  SECTION("an index naming a missing shard is an error naming index, shard and tensor") {
    eaglet::test::write_bytes(dir / "model.safetensors.index.json",
                              R"({"weight_map": {"z.weight": "model-00009.safetensors"}})");
    std::string msg = error_of([&] { SafetensorsSet s(dir.str()); });
    INFO(msg);
    CHECK(msg.find("model.safetensors.index.json") != std::string::npos);
    CHECK(msg.find("model-00009.safetensors") != std::string::npos);
    CHECK(msg.find("'z.weight'") != std::string::npos);
  }
  SECTION("an index putting a tensor in the wrong shard is an error naming both") {
    eaglet::test::write_bytes(
        dir / "model.safetensors.index.json",
        R"({"weight_map": {"c.weight": "model-00001-of-00002.safetensors"}})");
    SafetensorsSet s(dir.str());
    std::string msg = error_of([&] { s.get("c.weight"); });
    INFO(msg);
    CHECK(msg.find("model-00001-of-00002.safetensors") != std::string::npos);
    CHECK(msg.find("'c.weight'") != std::string::npos);
  }
  SECTION("a folder with one model.safetensors and a single file path also work") {
    TempDir one("st_single");
    write_safetensors(one / "model.safetensors",
                      {{"w", make(std::vector<float>{3}, {1}, c10::kFloat)}});
    CHECK(SafetensorsSet(one.str()).get("w").data_ptr<float>()[0] == 3.0f);
    CHECK(SafetensorsSet(one / "model.safetensors").names() == std::vector<std::string>{"w"});
  }
}

TEST_CASE("safetensors: bad files give errors naming the file and the tensor",
          "[io][safetensors]") {
  TempDir dir("st_errors");
  const std::string path = dir / "bad.safetensors";
  // A valid file: one F32 [2, 3] tensor "w" (24 bytes).
  const std::string good_header = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  const std::string data(24, '\0');
  auto expect = [&](const std::string& bytes, std::vector<std::string> needles) {
    eaglet::test::write_bytes(path, bytes);
    std::string msg = error_of([&] { SafetensorsFile f(path); });
    INFO(msg);
    REQUIRE(!msg.empty());
    CHECK(msg.find(path) != std::string::npos);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
  };
  eaglet::test::write_bytes(path, raw_file(good_header, data));
  REQUIRE(error_of([&] { SafetensorsFile f(path); }).empty());

  SECTION("missing file") {
    std::string msg = error_of([&] { SafetensorsFile f(dir / "none.safetensors"); });
    CHECK(msg.find(dir / "none.safetensors") != std::string::npos);
  }
  SECTION("shorter than 8 bytes") {
    expect("abc", {"truncated"});
  }
  SECTION("header length beyond the file") {
    expect(raw_file(good_header, data, 1 << 20), {"1048576"});
  }
  SECTION("header not JSON") {
    expect(raw_file("{\"w\": nope}", ""), {"not valid JSON"});
  }
  SECTION("header not an object") {
    expect(raw_file("[1, 2]", ""), {"not an object"});
  }
  SECTION("data truncated: offsets beyond the data") {
    expect(raw_file(good_header, data.substr(0, 20)), {"'w'", "[0, 24]"});
  }
  SECTION("offsets out of range") {
    expect(raw_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}})", data),
           {"'w'", "[8, 32]"});
  }
  SECTION("offsets not matching dtype size x shape") {
    expect(raw_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,24]}})", data),
           {"'w'", "16 bytes"});
  }
  SECTION("unknown dtype") {
    expect(raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[24],"data_offsets":[0,24]}})", data),
           {"'w'", "F8_E4M3"});
  }
  SECTION("negative dimension") {
    expect(raw_file(R"({"w":{"dtype":"U8","shape":[-24],"data_offsets":[0,24]}})", data), {"'w'"});
  }
  SECTION("overlapping tensors") {
    expect(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                    R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                    data),
           {"'a'", "'b'", "overlap"});
  }
  SECTION("non-string metadata") {
    expect(raw_file(R"({"__metadata__":{"step":3}})", ""), {"step"});
  }
  SECTION("a BOOL byte other than 0/1") {
    eaglet::test::write_bytes(
        path, raw_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x02"));
    SafetensorsFile f(path);
    std::string msg = error_of([&] { f.get("m"); });
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("'m'") != std::string::npos);
  }
  SECTION("missing tensor: file, tensor and the available names") {
    SafetensorsFile f(path);
    std::string msg = error_of([&] { f.get("q_proj.weight"); });
    INFO(msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("'q_proj.weight'") != std::string::npos);
    CHECK(msg.find("e.g. w") != std::string::npos);
  }
  SECTION("wrong shape: file, tensor, expected and actual shape") {
    SafetensorsFile f(path);
    std::string msg = error_of([&] { f.get("w", {3, 2}); });
    INFO(msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("'w'") != std::string::npos);
    CHECK(msg.find("has shape [2, 3], expected [3, 2]") != std::string::npos);
  }
  SECTION("writer: unsupported dtype and duplicate names name the file and the tensor") {
    std::string msg = error_of([&] {
      write_safetensors(
          path,
          {{"c", make(std::vector<float>{1, 2}, {1, 2}, c10::kFloat).view(c10::kComplexFloat)}});
    });
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("'c'") != std::string::npos);
    at::Tensor x = make(std::vector<float>{1}, {1}, c10::kFloat);
    msg = error_of([&] { write_safetensors(path, {{"x", x}, {"x", x}}); });
    CHECK(msg.find("'x'") != std::string::npos);
    // The failed writes left the earlier file in place and no temporary file.
    CHECK(SafetensorsFile(path).has("w"));
    CHECK(!eaglet::io::path_exists(path + ".tmp"));
  }
}

// The Python side of the interop tests builds the same values as known_tensors().
static const char* kPythonKnown = R"PY(
import sys, json, torch
from safetensors import safe_open
from safetensors.torch import save_file, load_file
known = {
    "f64": torch.arange(12, dtype=torch.float64).reshape(3, 4) / 8,
    "f32": (torch.arange(12, dtype=torch.float64) / 8 - 1).to(torch.float32).reshape(3, 4),
    "f16": (torch.arange(6, dtype=torch.float64) / 4).to(torch.float16).reshape(2, 3),
    "bf16": (torch.arange(6, dtype=torch.float64) * -0.5).to(torch.bfloat16),
    "i64": torch.tensor([-(2**63), 2**63 - 1, 0, 7], dtype=torch.int64),
    "i32": torch.arange(5, dtype=torch.int32) * -3,
    "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
    "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
    "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True, True]),
    "scalar": torch.tensor(2.5, dtype=torch.float32),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
}
)PY";

TEST_CASE("safetensors: files written by Python safetensors read back exactly",
          "[io][safetensors][python]") {
  TempDir dir("st_py_write");
  const std::string path = dir / "py.safetensors";
  auto r = eaglet::test::run_python(dir, std::string(kPythonKnown) + R"PY(
save_file(known, sys.argv[1], metadata={"format": "pt", "origin": "python"})
print("WROTE")
)PY",
                                    {path});
  INFO(r.output);
  REQUIRE(r.code == 0);
  REQUIRE(r.output.find("WROTE") != std::string::npos);
  SafetensorsFile f(path);
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"origin", "python"}});
  auto known = known_tensors();
  CHECK(f.tensors().size() == known.size());
  for (const auto& [name, t] : known) {
    INFO("tensor " << name);
    REQUIRE(f.has(name));
    CHECK(same_bytes(f.get(name), t));
  }
}

TEST_CASE("safetensors: files written by eaglet load in Python safetensors",
          "[io][safetensors][python]") {
  TempDir dir("st_py_read");
  const std::string path = dir / "cpp.safetensors";
  write_safetensors(path, known_tensors(), {{"format", "pt"}, {"origin", "eaglet"}});
  auto r = eaglet::test::run_python(dir, std::string(kPythonKnown) + R"PY(
got = load_file(sys.argv[1])
assert sorted(got) == sorted(known), (sorted(got), sorted(known))
for k, v in known.items():
    assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
    assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
    assert torch.equal(got[k], v), (k, got[k], v)
with safe_open(sys.argv[1], framework="pt") as f:
    assert f.metadata() == {"format": "pt", "origin": "eaglet"}, f.metadata()
with open(sys.argv[1], "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    assert n % 8 == 0, n
    order = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
assert order == list(known), order  # header in the order given (data follow it)
print("OK")
)PY",
                                    {path});
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.find("OK") != std::string::npos);
}
