// Config parsing, overrides, the effective-config dump and each validation rule's message.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "catch.h"
#include "core/config.h"
#include "core/error.h"

using namespace eaglet;

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}
bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
}  // namespace

TEST_CASE("defaults and YAML values", "[config]") {
  Config c = parse_config(
      "parallel:\n  ulysses: 2\ntraining:\n  lr: 3.0e-4\n  ttt_weights: [1, 0.5, 0.25]\n", "t");
  REQUIRE(c.parallel.ulysses == 2);
  REQUIRE(c.parallel.ring == 1);
  REQUIRE(c.training.lr == 3e-4);
  REQUIRE(c.training.ttt_weights == std::vector<double>{1, 0.5, 0.25});
  REQUIRE(c.training.ttt_length == 7);
  REQUIRE(c.data.store == "dir");
  REQUIRE(c.runtime.threads == 1);
}

TEST_CASE("--set overrides apply in order and parse as YAML", "[config]") {
  Config c = parse_config(
      "parallel:\n  ring: 2\n", "t",
      {"parallel.ring=4", "parallel.ring=8", "data.consume=true", "training.ttt_weights=[1,2]"});
  REQUIRE(c.parallel.ring == 8);
  REQUIRE(c.data.consume);
  REQUIRE(c.training.ttt_weights == std::vector<double>{1, 2});
}

TEST_CASE("unknown keys and wrong types are all reported with key and value", "[config]") {
  auto msg =
      error_of([] { parse_config("trainig:\n  lr: 1\nparallel:\n  ring: two\n", "run.yaml"); });
  REQUIRE(contains(
      msg, "config error: trainig.lr: unknown key in run.yaml (did you mean training.lr?)"));
  REQUIRE(contains(msg, "config error: parallel.ring=two: expected int"));
  msg = error_of([] { parse_config("", "t", {"nope=1"}); });
  REQUIRE(contains(msg, "config error: nope: unknown key in --set"));
  msg = error_of([] { parse_config("[1, 2]", "t"); });
  REQUIRE(contains(msg, "top level must be a mapping"));
}

TEST_CASE("a key given twice is an error naming its path, file and lines", "[config]") {
  auto msg = error_of([] { parse_config("training:\n  lr: 1\n  seed: 3\n  lr: 2\n", "run.yaml"); });
  REQUIRE(msg == "config error: training.lr: duplicate key in run.yaml (lines 2 and 4)");
  msg = error_of([] {
    parse_config("training:\n  lr: 1\nparallel:\n  ring: 2\ntraining:\n  seed: 3\n", "run.yaml");
  });
  REQUIRE(msg == "config error: training: duplicate key in run.yaml (lines 1 and 5)");
  msg = error_of([] {
    parse_config("model:\n  config:\n    head_dim: 8\n    head_dim: 8\n    head_dim: 16\n",
                 "m.yaml");
  });
  REQUIRE(msg == "config error: model.config.head_dim: duplicate key in m.yaml (lines 3, 4 and 5)");
  msg = error_of([] { parse_config("output_dir: a\noutput_dir: b\n", "t"); });
  REQUIRE(msg == "config error: output_dir: duplicate key in t (lines 1 and 2)");
  // The same name in different mappings is no duplicate.
  Config c =
      parse_config("training:\n  seed: 1\ncheckpoint:\n  keep: 1\nparallel: {ring: 1}\n", "t");
  REQUIRE(c.training.seed == 1);
}

TEST_CASE("a quoted value for a number or bool is an error; strings take both", "[config]") {
  struct Case {
    std::string yaml;
    std::vector<std::string> sets;
    std::string message;
  };
  std::vector<Case> cases = {
      {"",
       {"training.max_steps=\"10\""},
       "config error: training.max_steps=\"10\": expected int, got a quoted string"},
      {"training:\n  lr: \"1e-4\"\n",
       {},
       "config error: training.lr=\"1e-4\": expected float, got a quoted string"},
      {"data:\n  consume: 'true'\n",
       {},
       "config error: data.consume=\"true\": expected bool, got a quoted string"},
      {"",
       {"data.follow='false'"},
       "config error: data.follow=\"false\": expected bool, got a quoted string"},
      {"training:\n  ttt_weights: [1, \"0.5\"]\n",
       {},
       "config error: training.ttt_weights=[1, \"0.5\"]: expected list[float], got a quoted "
       "string"},
      {"parallel:\n  ring: !!str 2\n",
       {},
       "config error: parallel.ring=\"2\": expected int, got a quoted string"},
  };
  for (const auto& k : cases) {
    INFO(k.message);
    REQUIRE(error_of([&] { parse_config(k.yaml, "t", k.sets); }) == k.message);
  }
  Config c = parse_config("output_dir: \"runs/a b\"\ndata:\n  path: '123'\n  manifest: m.jsonl\n",
                          "t", {"model.target=\"/models/x\"", "runtime.device=cpu"});
  REQUIRE(c.output_dir == "runs/a b");
  REQUIRE(c.data.path == "123");
  REQUIRE(c.data.manifest == "m.jsonl");
  REQUIRE(c.model.target == "/models/x");
  REQUIRE(c.runtime.device == "cpu");
  // The same in a draft config.json: JSON strings are quoted scalars.
  std::string path = "/tmp/eaglet_test_quoted_config.json";
  std::ofstream(path) << R"({"hidden_size": "4096", "rope_scaling": {"rope_type": "llama3"}})";
  REQUIRE(error_of([&] { parse_config("model:\n  config: " + path + "\n", "t"); }) ==
          "config error: model.config.hidden_size=\"4096\": expected int, got a quoted string "
          "(from " +
              path + ")");
  std::remove(path.c_str());
  // Plain numbers and bools still parse.
  c = parse_config("training:\n  max_steps: 10\n  lr: 1e-4\ndata:\n  consume: true\n", "t");
  REQUIRE(c.training.max_steps == 10);
  REQUIRE(c.training.lr == 1e-4);
  REQUIRE(c.data.consume);
}

TEST_CASE("validation rules name key, value and rule", "[config]") {
  struct Rule {
    std::vector<std::string> sets;
    int64_t world;
    std::string message;
  };
  std::vector<Rule> rules = {
      {{"parallel.ulysses=2", "parallel.ring=2"},
       6,
       "config error: parallel.ulysses*parallel.ring=4: world size 6 must be divisible by "
       "ulysses*ring"},
      {{"parallel.ulysses=4", "model.config.num_attention_heads=6",
        "model.config.num_key_value_heads=2"},
       4,
       "config error: model.config.num_attention_heads=6: must be divisible by parallel.ulysses "
       "(4)"},
      {{"parallel.ulysses=4", "model.config.num_attention_heads=8",
        "model.config.num_key_value_heads=2"},
       4,
       "config error: model.config.num_key_value_heads=2: must be divisible by parallel.ulysses "
       "(4)"},
      {{"training.ttt_length=4", "data.max_seq_length=4"},
       1,
       "config error: data.max_seq_length=4: must be > training.ttt_length (4)"},
      {{"training.ttt_weights=[1]"},
       1,
       "config error: training.ttt_weights=[1]: must have training.ttt_length (7) entries"},
      {{"data.store=s3"}, 1, "config error: data.store=s3: must be one of dir, mooncake"},
      {{"checkpoint.keep=0"}, 1, "config error: checkpoint.keep=0: must be >= 1"},
  };
  for (const auto& r : rules) {
    Config c = parse_config("", "t", r.sets);
    auto errors = validate(c, r.world);
    INFO(r.message);
    REQUIRE(std::find(errors.begin(), errors.end(), r.message) != errors.end());
  }
  REQUIRE(validate(Config{}, 1).empty());
}

TEST_CASE("effective config dump reloads to the same config", "[config]") {
  Config c = parse_config("", "t", {"parallel.ring=2", "training.lr=0.002", "output_dir=/tmp/x"});
  std::string text = to_yaml(c);
  Config back = parse_config(text, "dump");
  REQUIRE(to_yaml(back) == text);
  REQUIRE(back.parallel.ring == 2);
  REQUIRE(back.training.lr == 0.002);
}

TEST_CASE("model.config may name an HF config.json", "[config]") {
  std::string path = "/tmp/eaglet_test_draft_config.json";
  {
    std::ofstream out(path);
    out << R"({"architectures": ["LlamaForCausalLMEagle3"], "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 128, "draft_vocab_size": 32000, "vocab_size": 151936,
              "rope_theta": 1000000.0, "torch_dtype": "bfloat16"})";
  }
  Config c = parse_config("model:\n  config: " + path + "\n", "t");
  REQUIRE(c.model.config.hidden_size == 4096);
  REQUIRE(c.model.config.num_key_value_heads == 8);
  REQUIRE(c.model.config.rope_theta == 1000000.0);
  REQUIRE(c.model.config.target_hidden_size == 4096);  // absent: hidden_size (HF's default)
  REQUIRE(c.model.config_file == path);
  {  // head_dim absent: hidden_size / num_attention_heads; target_hidden_size as given
    std::ofstream out(path);
    out << R"({"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
              "target_hidden_size": 960})";
  }
  Config d = parse_config("model:\n  config: " + path + "\n", "t");
  REQUIRE(d.model.config.head_dim == 64);
  REQUIRE(d.model.config.target_hidden_size == 960);
  std::remove(path.c_str());
  auto msg = error_of([&] { parse_config("model:\n  config: " + path + "\n", "t"); });
  REQUIRE(contains(msg, "model.config=" + path + ": file not found or unreadable"));
}

TEST_CASE("model.init_from implies its config.json unless model.config is given", "[config]") {
  const std::string dir = "/tmp/eaglet_test_init_from";
  std::system(("mkdir -p " + dir).c_str());
  {  // TorchSpec's draft config: no target_hidden_size, aux ids under eagle_config
    std::ofstream out(dir + "/config.json");
    out << R"({"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
              "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 14, 26]}})";
  }
  Config c = parse_config("model:\n  init_from: " + dir + "\n", "t");
  REQUIRE(c.model.config.hidden_size == 576);
  REQUIRE(c.model.config.num_key_value_heads == 3);
  REQUIRE(c.model.config.head_dim == 64);
  REQUIRE(c.model.config.target_hidden_size == 576);
  REQUIRE(c.model.config.aux_layer_ids == std::vector<int64_t>{1, 14, 26});
  // Also when init_from comes from --set.
  REQUIRE(parse_config("", "t", {"model.init_from=" + dir}).model.config.hidden_size == 576);
  // Any model.config key (inline or a path) wins: nothing is implied.
  Config d = parse_config("model:\n  init_from: " + dir + "\n  config:\n    hidden_size: 96\n", "t");
  REQUIRE(d.model.config.hidden_size == 96);
  REQUIRE(d.model.config.num_key_value_heads == Config{}.model.config.num_key_value_heads);
  REQUIRE(parse_config("", "t", {"model.init_from=" + dir, "model.config.head_dim=8"})
              .model.config.hidden_size == Config{}.model.config.hidden_size);
  {  // a broken implied config.json names init_from
    std::ofstream out(dir + "/config.json");
    out << "{not json";
  }
  auto msg = error_of([&] { parse_config("", "t", {"model.init_from=" + dir}); });
  REQUIRE(contains(msg, "model.init_from (its config.json)=" + dir + "/config.json: not valid JSON"));
  // No config.json there: nothing implied (the weights' shapes are checked when loaded).
  std::remove((dir + "/config.json").c_str());
  REQUIRE(parse_config("", "t", {"model.init_from=" + dir}).model.config.hidden_size ==
          Config{}.model.config.hidden_size);
}

TEST_CASE("shipped configs are valid", "[config]") {
  for (auto [file, world] :
       {std::pair{"configs/demo.yaml", 4}, std::pair{"configs/reference.yaml", 8}}) {
    INFO(file);
    Config c = load_config(std::string(EAGLET_SOURCE_DIR) + "/" + file);
    REQUIRE(validate(c, world).empty());
  }
}
