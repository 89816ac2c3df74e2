// Checkpoints (train/checkpoint.h): the XXH64 checksum against xxhsum's values, a bit-exact round
// trip with latest and keep-N, saving a step again (swap and no-swap fall-back), start-up clean-up
// of temporaries, verification (damaged and truncated files, bad trainer_state.json keys,
// format versions) and the error for a damaged `latest`, which names the newest intact checkpoint.
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "catch.h"
#include "core/error.h"
#include "io/checksum.h"
#include "io/files.h"
#include "torch/model_fixture.h"
#include "torch/test_files.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

using namespace eaglet;

namespace {

// A tiny draft with one optimizer step taken, to save.
struct Trained {
  test::Problem p = test::make_problem(6, 2, 77);
  train::AdamW opt{p.w.trainable(), TrainingConfig{}};
  Trained() {
    for (auto& [name, t] : p.w.trainable())
      t->mutable_grad() = at::full(t->sizes(), 0.01, t->options());
    opt.step(0.001);
  }
  std::string save(const std::string& out, int64_t step, int64_t keep = 3) {
    return train::save_checkpoint(out, step, p.w, p.cfg, p.vocab, opt, state(step), keep);
  }
  static nlohmann::json state(int64_t step) {
    return {{"step", step}, {"cursor", 4 * step}, {"skipped_steps", 1}, {"sp_size", 2}};
  }
};

std::string ckpt(const std::string& out, int64_t step) {
  return out + "/checkpoints/" + fmt::format("step_{:08d}", step);
}

// Entries of the checkpoints folder that are neither step_* folders nor `latest`.
std::vector<std::string> leftovers(const std::string& out) {
  std::vector<std::string> odd;
  for (const auto& name : io::list_dir(out + "/checkpoints"))
    if (name.rfind("step_", 0) != 0 && name != "latest") odd.push_back(name);
  return odd;
}

// Overwrites `count` float32 values at the start of the tensor data of a safetensors file with
// 1e30 (the file keeps its size).
void overwrite_floats(const std::string& path, int count) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), 8);
  f.seekp(static_cast<std::streamoff>(8 + header));
  const float big = 1e30f;
  for (int i = 0; i < count; ++i) f.write(reinterpret_cast<const char*>(&big), 4);
}

void edit_state(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  const auto path = dir + "/trainer_state.json";
  auto j = nlohmann::json::parse(test::read_bytes(path));
  edit(j);
  test::write_bytes(path, j.dump(2));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Sets an environment variable for one scope.
struct ScopedEnv {
  const char* name;
  ScopedEnv(const char* n, const char* value) : name(n) { ::setenv(n, value, 1); }
  ~ScopedEnv() { ::unsetenv(name); }
};

}  // namespace

TEST_CASE("checksum: XXH64 equals xxhsum -H1, in one piece, in pieces and from files",
          "[checkpoint]") {
  // xxhsum 0.8.1 -H1 of bytes (7 i + 3) mod 256, i < n: every tail length of the algorithm.
  const std::vector<std::pair<size_t, const char*>> known = {
      {0, "ef46db3751d8e999"},  {1, "1f25c8d0bc1f4bb6"},   {3, "31d2363f52e564c9"},
      {4, "9bb64b7d66ee9fda"},  {5, "c7608efddb7051fe"},   {8, "dab99d95c6f90092"},
      {9, "170bb6bf975b4c02"},  {31, "a2aa5f33cc4a6119"},  {32, "23c3c17ef790fd97"},
      {33, "50a7cfc7ba588784"}, {63, "5e3e54b431c7493c"},  {64, "0eb64b3ef6eeb01f"},
      {65, "a383b724b2bd12f1"}, {100, "a61f8d4c170fe531"}, {1000, "5f235fa033f1a3fb"}};
  for (const auto& [n, hex] : known) {
    INFO(n);
    std::string data(n, '\0');
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>((7 * i + 3) % 256);
    CHECK(io::checksum_hex(io::checksum64(data.data(), n)) == hex);
    io::Checksum64 pieces;  // 1, 2, 3 ... bytes at a time
    for (size_t at = 0, len = 1; at < n; at += len, ++len)
      pieces.update(data.data() + at, std::min(len, n - at));
    CHECK(io::checksum_hex(pieces.digest()) == hex);
  }
  // A file of several 8 MiB read chunks plus an odd tail, against the one-piece checksum.
  test::TempDir dir("checksum");
  std::string big((8 << 20) * 2 + 13, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  test::write_bytes(dir / "big.bin", big);
  CHECK(io::file_checksum64(dir / "big.bin") == io::checksum64(big.data(), big.size()));
  big[big.size() / 2] ^= 1;
  CHECK(io::file_checksum64(dir / "big.bin") != io::checksum64(big.data(), big.size()));
}

TEST_CASE("checkpoints: bit-exact round trip, latest, keep-N, format, incompatible models",
          "[train][checkpoint]") {
  test::TempDir dir("ckpt_roundtrip");
  const auto out = dir.str();
  Trained t;
  CHECK(train::resolve_resume(out, "auto").empty());
  for (int64_t step : {10, 20, 30}) t.save(out, step, 2);
  CHECK(!io::path_exists(ckpt(out, 10)));  // keep = 2
  CHECK(io::is_dir(ckpt(out, 20)));
  CHECK(train::resolve_resume(out, "auto") == ckpt(out, 30));
  CHECK(leftovers(out).empty());

  // trainer_state.json: the caller's keys, the format version and each file's size and checksum.
  auto j = nlohmann::json::parse(test::read_bytes(ckpt(out, 30) + "/trainer_state.json"));
  CHECK(j["format_version"] == train::kCheckpointFormat);
  CHECK(j["cursor"] == 120);
  for (const char* f : {"model.safetensors", "config.json", "optimizer.safetensors"}) {
    INFO(f);
    const auto path = ckpt(out, 30) + "/" + f;
    CHECK(j["files"][f]["bytes"] == io::file_size(path));
    CHECK(j["files"][f]["checksum"] == io::checksum_hex(io::file_checksum64(path)));
  }
  const auto verified = train::verify_checkpoint(ckpt(out, 30));
  CHECK(verified.step == 30);
  CHECK(verified.files.size() == 3);

  auto q = test::make_problem(6, 2, 78);
  train::AdamW opt2(q.w.trainable(), TrainingConfig{});
  model::VocabMap vocab;
  auto state = train::load_checkpoint(ckpt(out, 30), q.cfg, q.w, vocab, opt2);
  CHECK(state.step == 30);
  CHECK(state.cursor == 120);
  CHECK(state.skipped_steps == 1);
  CHECK(state.sp_size == 2);
  CHECK(state.format_version == 1);
  CHECK(state.json["step"] == 30);
  for (size_t i = 0; i < t.p.w.trainable().size(); ++i)
    CHECK(at::equal(*t.p.w.trainable()[i].second, *q.w.trainable()[i].second));
  auto s1 = t.opt.state(), s2 = opt2.state();
  for (size_t i = 0; i < s1.size(); ++i) {
    INFO(s1[i].first);
    CHECK(at::equal(s1[i].second.reshape({-1}), s2[i].second.reshape({-1})));
  }
  CHECK(at::equal(vocab.d2t, t.p.vocab.d2t));

  auto other = q.cfg;
  other.intermediate_size = 64;
  auto msg =
      test::error_of([&] { train::load_checkpoint(ckpt(out, 30), other, q.w, vocab, opt2); });
  CHECK(contains(msg, "is for another model: intermediate_size is 48 there and 64"));
  msg = test::error_of([&] { train::resolve_resume(out, ckpt(out, 99)); });
  CHECK(contains(msg, "--resume " + ckpt(out, 99) + ": no such checkpoint folder"));
  io::remove_tree(ckpt(out, 20) + "/optimizer.safetensors");
  msg = test::error_of([&] { train::resolve_resume(out, ckpt(out, 20)); });
  CHECK(contains(msg, "not a complete checkpoint (optimizer.safetensors is missing)"));
}

TEST_CASE("checkpoints: saving a step again leaves a complete checkpoint and no temporaries",
          "[train][checkpoint]") {
  // Swapped in one step (renameat2 RENAME_EXCHANGE), and the fall-back where the file system
  // cannot: `latest` names a hard-linked copy meanwhile.
  const bool no_exchange = GENERATE(false, true);
  INFO("no rename exchange: " << no_exchange);
  ScopedEnv env("EAGLET_TEST_NO_RENAME_EXCHANGE", no_exchange ? "1" : "0");
  test::TempDir dir("ckpt_resave");
  const auto out = dir.str();
  Trained t;
  t.save(out, 10);
  t.save(out, 20);
  // Step 20 again (latest names it), then step 10 again (latest names another) with other
  // weights each time: the folder holds the new save, complete and verified.
  for (int64_t step : {20, 10}) {
    INFO("step " << step);
    for (auto& [name, w] : t.p.w.trainable()) {
      c10::NoGradGuard no_grad;
      w->add_(0.5);
    }
    t.save(out, step);
    CHECK(leftovers(out).empty());
    CHECK(train::resolve_resume(out, "auto") == ckpt(out, step));
    CHECK(train::verify_checkpoint(ckpt(out, step)).step == step);
    auto q = test::make_problem(6, 2, 78);
    train::AdamW opt2(q.w.trainable(), TrainingConfig{});
    model::VocabMap vocab;
    train::load_checkpoint(ckpt(out, step), q.cfg, q.w, vocab, opt2);
    CHECK(at::equal(*t.p.w.trainable()[0].second, *q.w.trainable()[0].second));
  }
  CHECK(io::is_dir(ckpt(out, 20)));  // step 10 saved again: the newer one is kept (keep = 3)
  // A step saved again while `latest` is missing or unusable (resumed with an explicit --resume).
  for (const char* latest : {"", "../x\n"}) {
    INFO("latest: " << latest);
    if (*latest == '\0')
      io::remove_tree(out + "/checkpoints/latest");
    else
      test::write_bytes(out + "/checkpoints/latest", latest);
    t.save(out, 20);
    CHECK(leftovers(out).empty());
    CHECK(train::resolve_resume(out, "auto") == ckpt(out, 20));
  }
}

TEST_CASE("checkpoints: stale temporaries are removed, a failed save leaves none",
          "[train][checkpoint]") {
  test::TempDir dir("ckpt_stale");
  const auto out = dir.str(), root = out + "/checkpoints";
  Trained t;
  t.save(out, 10);
  t.save(out, 20);
  io::make_dirs(root + "/.step_00000030.tmp-4242");
  test::write_bytes(root + "/.step_00000030.tmp-4242/model.safetensors", "partial");
  io::make_dirs(root + "/.step_00000020.tmp-77");  // the old folder after a swap
  io::make_dirs(root + "/.step_00000020.tmp-77.old");
  test::write_bytes(root + "/latest.tmp", "step_00000030\n");
  test::write_bytes(root + "/notes.txt", "kept");
  io::make_dirs(root + "/step_00000005");  // not a temporary, even if incomplete
  auto removed = train::remove_stale_temporaries(out);
  CHECK(removed == std::vector<std::string>{
                       root + "/.step_00000020.tmp-77", root + "/.step_00000020.tmp-77.old",
                       root + "/.step_00000030.tmp-4242", root + "/latest.tmp"});
  CHECK(io::list_dir(root) == std::vector<std::string>{"latest", "notes.txt", "step_00000005",
                                                       "step_00000010", "step_00000020"});
  CHECK(train::remove_stale_temporaries(out).empty());
  CHECK(train::remove_stale_temporaries(out + "/nothing-here").empty());

  // The copy `latest` names after a crash in the no-swap fall-back stays until latest moves on.
  const auto copy = root + "/.step_00000020.tmp-9.link";
  io::make_dirs(copy);
  for (const char* f :
       {"model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json"})
    io::link_file(ckpt(out, 20) + "/" + f, copy + "/" + f);
  test::write_bytes(root + "/latest", ".step_00000020.tmp-9.link\n");
  CHECK(train::remove_stale_temporaries(out).empty());
  CHECK(train::resolve_resume(out, "auto") == copy);
  t.save(out, 30);  // a save ends with the clean-up: the copy is no longer named
  CHECK(!io::path_exists(copy));
  CHECK(train::resolve_resume(out, "auto") == ckpt(out, 30));

  // A save that fails after writing most of its files (here: a trainer state without "cursor")
  // removes its temporary folder and leaves `latest` as it was.
  auto msg = test::error_of([&] {
    train::save_checkpoint(out, 40, t.p.w, t.p.cfg, t.p.vocab, t.opt,
                           {{"step", 40}, {"sp_size", 1}}, 3);
  });
  CHECK(contains(msg, "\"cursor\" is missing, expected a non-negative integer"));
  CHECK(leftovers(out) == std::vector<std::string>{"notes.txt"});
  CHECK(!io::path_exists(ckpt(out, 40)));
  CHECK(train::resolve_resume(out, "auto") == ckpt(out, 30));
}

TEST_CASE("checkpoints: damaged or truncated files are refused, naming the file",
          "[train][checkpoint]") {
  test::TempDir dir("ckpt_damaged");
  const auto out = dir.str();
  Trained t;
  t.save(out, 10);
  t.save(out, 20);
  // 200 weights overwritten with 1e30: same size, another checksum.
  const auto model = ckpt(out, 20) + "/model.safetensors";
  const auto size = io::file_size(model);
  overwrite_floats(model, 200);
  REQUIRE(io::file_size(model) == size);
  auto msg = test::error_of([&] { train::resolve_resume(out, ckpt(out, 20)); });
  INFO(msg);
  CHECK(
      contains(msg, "--resume " + ckpt(out, 20) + ": checkpoint file " + model + " has checksum "));
  CHECK(contains(msg, ", but trainer_state.json records "));
  CHECK(contains(msg, fmt::format("(both {} bytes)", size)));
  CHECK(!test::error_of([&] { train::verify_checkpoint(ckpt(out, 20)); }).empty());

  // Truncated optimizer state: the sizes differ (refused by load_checkpoint too, unread).
  const auto optim = ckpt(out, 10) + "/optimizer.safetensors";
  const auto full = io::file_size(optim);
  REQUIRE(::truncate(optim.c_str(), full / 2) == 0);
  msg = test::error_of([&] { train::resolve_resume(out, ckpt(out, 10)); });
  INFO(msg);
  CHECK(contains(msg, fmt::format("checkpoint file {} has {} bytes, but trainer_state.json "
                                  "records {} (truncated",
                                  optim, full / 2, full)));
  auto q = test::make_problem(6, 2, 78);
  train::AdamW opt2(q.w.trainable(), TrainingConfig{});
  model::VocabMap vocab;
  msg = test::error_of([&] { train::load_checkpoint(ckpt(out, 10), q.cfg, q.w, vocab, opt2); });
  CHECK(contains(msg, fmt::format("{} has {} bytes", optim, full / 2)));
}

TEST_CASE("checkpoints: trainer_state.json is validated key by key", "[train][checkpoint]") {
  test::TempDir dir("ckpt_state");
  const auto out = dir.str();
  Trained t;
  const auto d = t.save(out, 10);
  const auto path = d + "/trainer_state.json";
  const auto good = test::read_bytes(path);
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j["step"] = "forty"; },
       "\"step\" is \"forty\", expected a non-negative integer"},
      {[](auto& j) { j.erase("cursor"); },
       "\"cursor\" is missing, expected a non-negative integer"},
      {[](auto& j) { j["cursor"] = -3; }, "\"cursor\" is -3, expected a non-negative integer"},
      {[](auto& j) { j["step"] = 2.5; }, "\"step\" is 2.5, expected a non-negative integer"},
      {[](auto& j) { j["skipped_steps"] = true; },
       "\"skipped_steps\" is true, expected a non-negative integer"},
      {[](auto& j) { j["sp_size"] = 0; }, "\"sp_size\" is 0, expected an integer >= 1"},
      {[](auto& j) { j.erase("sp_size"); }, "\"sp_size\" is missing, expected an integer >= 1"},
      {[](auto& j) { j["format_version"] = 0; },
       "\"format_version\" is 0, expected an integer >= 1"},
      {[](auto& j) { j["format_version"] = 2; },
       "format_version 2 is newer than this eaglet reads (up to 1)"},
      {[](auto& j) { j.erase("files"); }, "\"files\" is missing, expected an object"},
      {[](auto& j) { j["files"].erase("config.json"); },
       "\"files.config.json\" is missing, expected an object"},
      {[](auto& j) { j["files"]["model.safetensors"]["bytes"] = "many"; },
       "\"files.model.safetensors.bytes\" is \"many\", expected a non-negative integer"},
      {[](auto& j) { j["files"]["optimizer.safetensors"]["checksum"] = "12ab"; },
       "\"files.optimizer.safetensors.checksum\" is \"12ab\", expected 16 lower-case hex digits"},
  };
  for (const auto& c : cases) {
    INFO(c.message);
    test::write_bytes(path, good);
    edit_state(d, c.edit);
    const std::string want = "checkpoint " + path + ": " + c.message;
    CHECK(contains(test::error_of([&] { train::read_trainer_state(d); }), want));
    CHECK(contains(test::error_of([&] { train::resolve_resume(out, d); }),
                   "--resume " + d + ": " + want));
    auto q = test::make_problem(6, 2, 78);
    train::AdamW opt2(q.w.trainable(), TrainingConfig{});
    model::VocabMap vocab;
    CHECK(contains(test::error_of([&] { train::load_checkpoint(d, q.cfg, q.w, vocab, opt2); }),
                   want));
  }
  test::write_bytes(path, "{\"step\": 10,");
  CHECK(contains(test::error_of([&] { train::read_trainer_state(d); }),
                 "checkpoint " + path + ": not valid JSON"));
  test::write_bytes(path, good);
  CHECK(train::read_trainer_state(d).step == 10);
}

TEST_CASE("checkpoints: an older eaglet's checkpoint (no format_version) still loads",
          "[train][checkpoint]") {
  test::TempDir dir("ckpt_legacy");
  const auto out = dir.str();
  Trained t;
  const auto d = t.save(out, 10);
  // As eaglet wrote it before format versions: no format_version, no files, no skipped_steps.
  edit_state(d, [](auto& j) {
    j.erase("format_version");
    j.erase("files");
    j.erase("skipped_steps");
  });
  CHECK(train::resolve_resume(out, "auto") == d);
  CHECK(train::resolve_resume(out, d) == d);
  auto q = test::make_problem(6, 2, 78);
  train::AdamW opt2(q.w.trainable(), TrainingConfig{});
  model::VocabMap vocab;
  auto state = train::load_checkpoint(d, q.cfg, q.w, vocab, opt2);
  CHECK(state.format_version == 0);
  CHECK(state.step == 10);
  CHECK(state.skipped_steps == 0);
  CHECK(state.files.empty());
}

TEST_CASE("checkpoints: a damaged latest under --resume auto names the newest intact checkpoint",
          "[train][checkpoint]") {
  test::TempDir dir("ckpt_latest");
  const auto out = dir.str(), root = out + "/checkpoints", latest = root + "/latest";
  Trained t;
  for (int64_t step : {10, 20, 30}) t.save(out, step);
  const auto auto_error = [&] {
    return test::error_of([&] { train::resolve_resume(out, "auto"); });
  };

  overwrite_floats(ckpt(out, 30) + "/model.safetensors", 200);
  auto msg = auto_error();
  INFO(msg);
  CHECK(contains(msg, "--resume auto: " + latest +
                          " names step_00000030, which cannot be resumed: "
                          "checkpoint file " +
                          ckpt(out, 30) + "/model.safetensors has checksum"));
  CHECK(contains(msg, "The newest intact checkpoint is " + ckpt(out, 20) +
                          ": continue from it with --resume " + ckpt(out, 20)));
  edit_state(ckpt(out, 20), [](auto& j) { j["step"] = "forty"; });
  msg = auto_error();
  CHECK(contains(msg, "continue from it with --resume " + ckpt(out, 10)));
  CHECK(!contains(msg, "--resume " + ckpt(out, 20)));
  io::remove_tree(ckpt(out, 10) + "/config.json");
  msg = auto_error();
  CHECK(contains(msg, "There is no intact checkpoint under " + root));

  // `latest` naming a missing folder, holding garbage, or missing beside step_* folders.
  t.save(out, 40);
  test::write_bytes(latest, "step_00000099\n");
  msg = auto_error();
  CHECK(contains(msg, "names step_00000099, which cannot be resumed: checkpoint " + ckpt(out, 99) +
                          ": no such folder"));
  CHECK(contains(msg, "continue from it with --resume " + ckpt(out, 40)));
  test::write_bytes(latest, "../../etc\n");
  msg = auto_error();
  CHECK(contains(msg, "--resume auto: " + latest + " cannot be used: " + latest +
                          " holds \"../../etc\", not the name of a checkpoint folder"));
  CHECK(contains(msg, "continue from it with --resume " + ckpt(out, 40)));
  io::remove_tree(latest);
  msg = auto_error();
  CHECK(contains(msg, "holds checkpoints but no `latest`"));
  CHECK(contains(msg, "continue from it with --resume " + ckpt(out, 40)));
}
