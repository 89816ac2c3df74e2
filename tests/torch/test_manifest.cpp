// Manifest: line format round trip, every validation error with its message (file:line, both
// values of a mismatch), the append writer, and the reader on complete, partial, blank, duplicate
// and growing files.
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "catch.h"
#include "data/manifest.h"
#include "test_files.h"

using namespace eaglet::data;
using eaglet::test::error_of;
using eaglet::test::TempDir;

namespace {

ManifestEntry entry(const std::string& key) {
  ManifestEntry e;
  e.key = key;
  e.seq_len = 100;
  e.hidden_size = 64;
  e.packed_loss_mask = "10,50,40";
  e.sp_size = 4;
  e.ttt_length = 3;
  e.max_seq_length = 256;
  return e;
}

const ManifestExpect kExpect{4, 3, 256, 64};

std::string parse_error(const std::string& line) {
  return error_of([&] { parse_manifest_line(line, kExpect, "m.jsonl", 7); });
}

// A valid line with one field's JSON text replaced (or removed when `value` is empty).
std::string with_field(const std::string& name, const std::string& value) {
  auto j = nlohmann::json::parse(manifest_line(entry("k1")));
  if (value.empty())
    j.erase(name);
  else
    j[name] = nlohmann::json::parse(value);
  return j.dump();
}

void append_raw(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("manifest line round trip in the documented field order", "[data]") {
  const auto e = entry("sample_7");
  const auto line = manifest_line(e);
  CHECK(line ==
        "{\"key\":\"sample_7\",\"seq_len\":100,\"hidden_size\":64,\"num_aux\":3,"
        "\"packed_loss_mask\":\"10,50,40\",\"sp_size\":4,\"ttt_length\":3,\"max_seq_length\":256,"
        "\"dtypes\":{\"hs\":\"bfloat16\",\"ids\":\"int64\",\"lhs\":\"bfloat16\"}}");
  const auto back = parse_manifest_line(line, kExpect, "m.jsonl", 1);
  CHECK(back.key == e.key);
  CHECK(back.seq_len == 100);
  CHECK(back.hidden_size == 64);
  CHECK(back.packed_loss_mask == e.packed_loss_mask);
  CHECK(back.hs_dtype == "bfloat16");
  // Unknown extra fields (e.g. a producer's tensor_shapes) are ignored.
  CHECK(error_of([&] {
          parse_manifest_line(with_field("tensor_shapes", "[1,2]"), kExpect, "m.jsonl", 1);
        }).empty());
  // hidden_size = 0 in the expectation accepts any.
  CHECK(error_of([&] {
          parse_manifest_line(with_field("hidden_size", "32"), {4, 3, 256, 0}, "m.jsonl", 1);
        }).empty());
}

TEST_CASE("manifest: any key, num_aux, aux_layer_ids, usp_sharded", "[data]") {
  // SGLang-path keys are accepted as they are.
  for (const std::string key : {"ultrachat.v2/conv:7_1a2b3c4d", "../x", "%41", "\xc3\xa9t\xc3\xa9"}) {
    auto e = entry(key);
    const auto back = parse_manifest_line(manifest_line(e), kExpect, "m.jsonl", 1);
    CHECK(back.key == key);
  }
  // num_aux follows the run's model.config.num_aux_hidden_states (0 accepts any).
  auto e = entry("k");
  e.num_aux = 4;
  e.aux_layer_ids = {1, 9, 17, 28};
  const auto line = manifest_line(e);
  CHECK(line.find("\"aux_layer_ids\":[1,9,17,28]") != std::string::npos);
  CHECK(line.find("usp_sharded") == std::string::npos);
  auto expect4 = kExpect;
  expect4.num_aux = 4;
  auto back = parse_manifest_line(line, expect4, "m.jsonl", 1);
  CHECK(back.num_aux == 4);
  CHECK(back.aux_layer_ids == std::vector<int64_t>{1, 9, 17, 28});
  CHECK(back.usp_sharded);
  auto any = kExpect;
  any.num_aux = 0;
  CHECK(parse_manifest_line(line, any, "m.jsonl", 1).num_aux == 4);
  CHECK(error_of([&] { parse_manifest_line(line, kExpect, "m.jsonl", 3); })
            .find("manifest m.jsonl:3: sample k: num_aux=4 differs from this run's "
                  "model.config.num_aux_hidden_states=3") != std::string::npos);
  CHECK(parse_manifest_line(manifest_line(entry("k")), kExpect, "m.jsonl", 1).aux_layer_ids.empty());

  // usp_sharded false: any producer layout, the entry carries this run's; the fields may be absent.
  auto u = entry("k");
  u.usp_sharded = false;
  u.sp_size = 8;
  u.ttt_length = 5;
  u.max_seq_length = 4096;
  CHECK(manifest_line(u).find("\"usp_sharded\":false") != std::string::npos);
  back = parse_manifest_line(manifest_line(u), kExpect, "m.jsonl", 1);
  CHECK(!back.usp_sharded);
  CHECK(back.sp_size == kExpect.sp_size);
  CHECK(back.ttt_length == kExpect.ttt_length);
  CHECK(back.max_seq_length == kExpect.max_seq_length);
  auto j = nlohmann::json::parse(manifest_line(u));
  for (const char* f : {"sp_size", "ttt_length", "max_seq_length"}) j.erase(f);
  back = parse_manifest_line(j.dump(), kExpect, "m.jsonl", 1);
  CHECK(!back.usp_sharded);
  CHECK(back.sp_size == kExpect.sp_size);
  // A pre-sharded line still needs them.
  j["usp_sharded"] = true;
  CHECK(error_of([&] { parse_manifest_line(j.dump(), kExpect, "m.jsonl", 1); })
            .find("missing field \"sp_size\"") != std::string::npos);
}

TEST_CASE("manifest validation errors name file:line and the problem", "[data]") {
  struct Case {
    std::string line, message;
  };
  const std::vector<Case> cases = {
      {"{\"key\": \"a\"", "manifest m.jsonl:7: not valid JSON"},
      {"[1, 2]", "manifest m.jsonl:7: expected a JSON object, got array"},
      {with_field("key", ""), "manifest m.jsonl:7: missing field \"key\""},
      {with_field("key", "5"), "manifest m.jsonl:7: field \"key\" must be a string, got integer 5"},
      {with_field("key", "\"a\\u0000b\""),
       "manifest m.jsonl:7: store key 'a\\0b': byte 1 is NUL, which no backend can store"},
      {with_field("seq_len", ""), "manifest m.jsonl:7: missing field \"seq_len\""},
      {with_field("seq_len", "\"100\""),
       "manifest m.jsonl:7: field \"seq_len\" must be an integer, got string \"100\""},
      {with_field("seq_len", "1.5"),
       "manifest m.jsonl:7: field \"seq_len\" must be an integer, got number 1.5"},
      {with_field("seq_len", "0"), "manifest m.jsonl:7: seq_len=0 must be in [1, "},
      {with_field("num_aux", "2"),
       "manifest m.jsonl:7: sample k1: num_aux=2 differs from this run's "
       "model.config.num_aux_hidden_states=3"},
      {with_field("num_aux", "0"), "manifest m.jsonl:7: num_aux=0 must be in [1, 1024]"},
      {with_field("aux_layer_ids", "[1, 2]"),
       "manifest m.jsonl:7: sample k1: aux_layer_ids=[1,2] must be a list of num_aux=3 integers "
       ">= 0"},
      {with_field("aux_layer_ids", "[1, -2, 3]"), "aux_layer_ids=[1,-2,3] must be a list"},
      {with_field("aux_layer_ids", "\"1,2,3\""), "aux_layer_ids=\"1,2,3\" must be a list"},
      {with_field("usp_sharded", "\"no\""),
       "manifest m.jsonl:7: field \"usp_sharded\" must be true or false, got string \"no\""},
      {with_field("packed_loss_mask", "\"3,0,2\""),
       "manifest m.jsonl:7: sample k1: packed_loss_mask \"3,0,2\": run 2 is 0"},
      {with_field("packed_loss_mask", "\"50,60\""),
       "manifest m.jsonl:7: sample k1: packed_loss_mask covers 110 tokens, more than seq_len=100"},
      {with_field("sp_size", "2"),
       "manifest m.jsonl:7: sample k1: sp_size=2 differs from this run's "
       "parallel.ulysses*parallel.ring=4"},
      {with_field("ttt_length", "7"),
       "manifest m.jsonl:7: sample k1: ttt_length=7 differs from this run's training.ttt_length=3"},
      {with_field("max_seq_length", "512"),
       "manifest m.jsonl:7: sample k1: max_seq_length=512 differs from this run's "
       "data.max_seq_length=256"},
      {with_field("hidden_size", "32"),
       "manifest m.jsonl:7: sample k1: hidden_size=32 differs from this run's "
       "model.config.target_hidden_size=64"},
      {with_field("dtypes", ""), "manifest m.jsonl:7: missing field \"dtypes\""},
      {with_field("dtypes", "\"bf16\""),
       "manifest m.jsonl:7: field \"dtypes\" must be an object, got string \"bf16\""},
      {with_field("dtypes", "{\"hs\":\"bfloat16\",\"ids\":\"int64\"}"),
       "manifest m.jsonl:7: missing field \"dtypes.lhs\""},
      {with_field("dtypes", "{\"hs\":\"float8\",\"ids\":\"int64\",\"lhs\":\"bfloat16\"}"),
       "manifest m.jsonl:7: sample k1: dtypes.hs=\"float8\" is not supported (one of bfloat16, "
       "float16, float32)"},
      {with_field("dtypes", "{\"hs\":\"bfloat16\",\"ids\":\"float32\",\"lhs\":\"bfloat16\"}"),
       "manifest m.jsonl:7: sample k1: dtypes.ids=\"float32\" is not supported (one of int64, "
       "int32)"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    const auto msg = parse_error(c.line);
    INFO(msg);
    CHECK(msg.find(c.message) != std::string::npos);
  }
}

TEST_CASE("manifest writer appends whole lines; reader reads only complete lines", "[data]") {
  TempDir dir("manifest");
  const std::string path = dir / "sub/manifest.jsonl";  // the folder is created
  ManifestReader reader(path, kExpect);
  CHECK(reader.poll() == 0);  // no file yet: nothing, no error
  CHECK(error_of([&] { reader.require_exists(); }).find("manifest " + path + ": no such file") !=
        std::string::npos);
  {
    ManifestWriter w(path);
    w.append(entry("a"));
    w.append(entry("b"));
  }
  CHECK(reader.poll() == 2);
  CHECK(reader.at(0).entry.key == "a");
  CHECK(reader.at(1).line == 2);
  // A partial line (producer mid-write) is not read until its newline arrives.
  const std::string line_c = manifest_line(entry("c"));
  append_raw(path, line_c.substr(0, 20));
  CHECK(reader.poll() == 0);
  append_raw(path, line_c.substr(20) + "\n\n   \n");  // blank lines are skipped
  CHECK(reader.poll() == 1);
  CHECK(reader.at(2).entry.key == "c");
  CHECK(reader.at(2).line == 3);
  // Invalid and duplicate lines stay in the stream as records with an error.
  ManifestWriter w(path);
  append_raw(path, with_field("sp_size", "2") + "\n");
  w.append(entry("a"));
  w.append(entry("d"));
  CHECK(reader.poll() == 3);
  CHECK(reader.size() == 6);
  CHECK(!reader.at(3).ok());
  CHECK(reader.at(3).line == 6);
  CHECK(reader.at(3).error.find("manifest " + path + ":6: sample k1: sp_size=2 differs") !=
        std::string::npos);
  CHECK(reader.at(4).error == "manifest " + path + ":7: sample a: duplicate key (first at line 1)");
  CHECK(reader.at(5).ok());
  CHECK(reader.invalid_count() == 2);
  CHECK(reader.first_error() == reader.at(3).error);
  CHECK(error_of([&] { reader.at(6); }).find("sample 6 requested but only 6 are read") !=
        std::string::npos);
}

TEST_CASE("manifest reader follows a growing file and times out with a message", "[data]") {
  TempDir dir("manifest_follow");
  const std::string path = dir / "manifest.jsonl";
  ManifestReader reader(path, kExpect);
  using ms = std::chrono::milliseconds;
  // Missing file: the timeout says so.
  CHECK(error_of([&] {
          reader.wait_for(1, ms(100), {}, ms(10));
        }).find("manifest " + path + ": the file does not exist (waited") != std::string::npos);
  std::thread producer([&] {
    ManifestWriter w(path);
    for (int i = 0; i < 5; ++i) {
      std::this_thread::sleep_for(ms(30));
      w.append(entry("s" + std::to_string(i)));
    }
  });
  CHECK(reader.wait_for(5, ms(10000), {}, ms(5)) == 5);
  producer.join();
  CHECK(reader.at(4).entry.key == "s4");
  // Not enough lines: the timeout names the count.
  CHECK(error_of([&] {
          reader.wait_for(7, ms(100), {}, ms(10));
        }).find("s for sample 7 but the file has 5 (is the producer still writing?)") !=
        std::string::npos);
  // A stop request ends the wait early without an error.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(reader.wait_for(
            9, ms(60000), [] { return true; }, ms(10)) == 5);
  CHECK(std::chrono::steady_clock::now() - t0 < ms(5000));
}

TEST_CASE("manifest path default and expectation from the config", "[data]") {
  eaglet::Config cfg;
  cfg.data.path = "store";
  CHECK(manifest_path(cfg.data) == "store/manifest.jsonl");
  cfg.data.manifest = "/x/m.jsonl";
  CHECK(manifest_path(cfg.data) == "/x/m.jsonl");
  cfg.parallel.ulysses = 2;
  cfg.parallel.ring = 3;
  const auto e = manifest_expect(cfg);
  CHECK(e.sp_size == 6);
  CHECK(e.ttt_length == cfg.training.ttt_length);
  CHECK(e.max_seq_length == cfg.data.max_seq_length);
  CHECK(e.hidden_size == cfg.model.config.target_hidden_size);
}
