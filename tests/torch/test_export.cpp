// eaglet export: a tiny fake checkpoint exported and read back with Python safetensors + json
// (names, dtypes, shapes, bf16 values, config keys), the embedding (from the checkpoint, a target
// folder, or left out), aux layer ids, the command itself (--vllm a harmless no-op), and
// checkpoints that must be refused without leaving a half export.
#include <ATen/core/Tensor.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "catch.h"
#include "io/files.h"
#include "io/hf_export.h"
#include "io/safetensors.h"
#include "test_files.h"

using eaglet::io::export_draft;
using eaglet::io::SafetensorsFile;
using eaglet::test::error_of;
using eaglet::test::TempDir;

namespace {

// hidden 64, heads 8, kv heads 4, head_dim 8, intermediate 128, vocab 256, draft vocab 128,
// target hidden 64 (or `target_hidden`).
nlohmann::json tiny_config(int64_t target_hidden = 64) {
  return {{"hidden_size", 64},        {"num_attention_heads", 8},
          {"num_key_value_heads", 4}, {"head_dim", 8},
          {"intermediate_size", 128}, {"vocab_size", 256},
          {"draft_vocab_size", 128},  {"target_hidden_size", target_hidden},
          {"rms_norm_eps", 1e-5},     {"rope_theta", 500000.0},
          {"rope_scaling", nullptr},  {"max_position_embeddings", 2048},
          {"eaglet_ttt_length", 7}};  // a key export must carry over unchanged
}

// The checkpoint's tensors with the shapes written out by hand (not derived by the code under
// test): random fp32 weights, d2t/t2d mapping draft id i to target id 2i.
std::vector<std::pair<std::string, at::Tensor>> tiny_weights(int64_t target_hidden = 64) {
  auto r = [](std::vector<int64_t> shape) { return at::randn(shape, at::kFloat); };
  at::Tensor fc = r({64, 3 * target_hidden});
  // Known bf16 roundings (to nearest, ties to even): 1 + 2^-8 -> 1.0, 1 + 3*2^-8 -> 1 + 2^-6.
  fc.data_ptr<float>()[0] = 1.00390625f;
  fc.data_ptr<float>()[1] = 1.01171875f;
  std::vector<int64_t> d2t(128);
  std::vector<uint8_t> t2d(256, 0);
  for (int64_t i = 0; i < 128; ++i) d2t[i] = i, t2d[2 * i] = 1;  // target = i + d2t[i] = 2i
  return {
      {"embed_tokens.weight", r({256, 64})},
      {"fc.weight", fc},
      {"midlayer.input_layernorm.weight", r({64})},
      {"midlayer.hidden_norm.weight", r({64})},
      {"midlayer.post_attention_layernorm.weight", r({64})},
      {"midlayer.self_attn.q_proj.weight", r({64, 128})},
      {"midlayer.self_attn.k_proj.weight", r({32, 128})},
      {"midlayer.self_attn.v_proj.weight", r({32, 128})},
      {"midlayer.self_attn.o_proj.weight", r({64, 64})},
      {"midlayer.mlp.gate_proj.weight", r({128, 64})},
      {"midlayer.mlp.up_proj.weight", r({128, 64})},
      {"midlayer.mlp.down_proj.weight", r({64, 128})},
      {"norm.weight", r({64})},
      {"lm_head.weight", r({128, 64})},
      {"d2t", at::from_blob(d2t.data(), {128}, at::kLong).clone()},
      {"t2d", at::from_blob(t2d.data(), {256}, at::kByte).to(at::kBool)},
  };
}

void write_checkpoint(const std::string& dir, const nlohmann::json& config,
                      const std::vector<std::pair<std::string, at::Tensor>>& weights) {
  eaglet::io::make_dirs(dir);
  eaglet::test::write_bytes(dir + "/config.json", config.dump(2));
  eaglet::io::write_safetensors(dir + "/model.safetensors", weights);
}

std::vector<std::pair<std::string, at::Tensor>> without(
    std::vector<std::pair<std::string, at::Tensor>> w, const std::string& name) {
  for (auto it = w.begin(); it != w.end(); ++it)
    if (it->first == name) {
      w.erase(it);
      break;
    }
  return w;
}

// Python check of an export against its checkpoint: every name (with `prefix` for the layer),
// dtype, shape and value (bf16 of the fp32 weights, exactly), and the config keys.
const char* kCheckExport = R"PY(
import sys, json, torch
from safetensors.torch import load_file
from safetensors import safe_open
ckpt_dir, out_dir, prefix, target_hidden = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ckpt = load_file(ckpt_dir + "/model.safetensors")
out = load_file(out_dir + "/model.safetensors")
want = {}
for name, t in ckpt.items():
    new = prefix + name[len("midlayer."):] if name.startswith("midlayer.") else name
    want[new] = t if name in ("d2t", "t2d") else t.to(torch.bfloat16)
assert sorted(out) == sorted(want), (sorted(out), sorted(want))
for name, t in want.items():
    got = out[name]
    assert got.dtype == t.dtype, (name, got.dtype, t.dtype)
    assert got.shape == t.shape, (name, got.shape, t.shape)
    assert torch.equal(got, t), name
assert out["d2t"].dtype == torch.int64 and out["t2d"].dtype == torch.bool
assert out["fc.weight"][0, 0].item() == 1.0 and out["fc.weight"][0, 1].item() == 1.015625
with safe_open(out_dir + "/model.safetensors", "pt") as f:
    assert f.metadata().get("format") == "pt", f.metadata()
cfg = json.load(open(out_dir + "/config.json"))
expect = {
    "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "num_hidden_layers": 1,
    "torch_dtype": "bfloat16", "hidden_act": "silu", "tie_word_embeddings": False,
    "attention_bias": False, "draft_vocab_size": 128, "vocab_size": 256, "hidden_size": 64,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8,
    "intermediate_size": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": None, "max_position_embeddings": 2048, "eaglet_ttt_length": 7,
}
for k, v in expect.items():
    assert k in cfg and cfg[k] == v, (k, cfg.get(k), v)
if target_hidden == 64:
    assert "target_hidden_size" not in cfg, cfg
else:
    assert cfg["target_hidden_size"] == target_hidden, cfg
print("OK")
)PY";

// The eaglet binary, beside the tests folder of the build tree.
std::string eaglet_binary() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  return eaglet::io::join_path(eaglet::io::parent_dir(eaglet::io::parent_dir(self)), "eaglet");
}

}  // namespace

static void check_export(int64_t target_hidden) {
  TempDir dir("export_tiny");
  INFO("target_hidden_size " << target_hidden);
  auto weights = tiny_weights(target_hidden);
  write_checkpoint(dir / "ckpt", tiny_config(target_hidden), weights);
  export_draft(dir / "ckpt", dir / "out");
  CHECK(!eaglet::io::path_exists(dir / "out.tmp"));
  CHECK(eaglet::io::is_file(dir / "out/model.safetensors"));

  // C++ side: the export holds bf16 of every fp32 weight, d2t and t2d unchanged.
  SafetensorsFile out(dir / "out/model.safetensors");
  CHECK(out.tensors().size() == weights.size());  // embed_tokens.weight included
  REQUIRE(out.has("embed_tokens.weight"));
  for (const auto& [name, t] : weights) {
    INFO("tensor " << name);
    REQUIRE(out.has(name));
    at::Tensor got = out.get(name);
    bool vocab = name == "d2t" || name == "t2d";
    CHECK(out.info(name).dtype == (name == "d2t" ? "I64" : name == "t2d" ? "BOOL" : "BF16"));
    CHECK(at::equal(got, vocab ? t : t.to(at::kBFloat16)));
  }
  at::Tensor fc = out.get("fc.weight");
  CHECK(fc.sizes() == c10::IntArrayRef({64, 3 * target_hidden}));
  CHECK(fc[0][0].item<float>() == 1.0f);
  CHECK(fc[0][1].item<float>() == 1.015625f);

  auto r = eaglet::test::run_python(
      dir, kCheckExport, {dir / "ckpt", dir / "out", "midlayer.", std::to_string(target_hidden)});
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.find("OK") != std::string::npos);
}

TEST_CASE("export: a tiny checkpoint exports to what Python safetensors and json expect",
          "[io][export][python]") {
  SECTION("target_hidden_size equal to hidden_size (omitted from config.json)") {
    check_export(64);
  }
  SECTION("target_hidden_size 96 (kept in config.json)") {
    check_export(96);
  }
}

TEST_CASE("export: the embedding from a target folder, or left out", "[io][export]") {
  TempDir dir("export_embed");
  const auto weights = without(tiny_weights(), "embed_tokens.weight");
  write_checkpoint(dir / "ckpt", tiny_config(), weights);
  SECTION("no embedding anywhere: refused, naming --target and --no-embeddings") {
    std::string msg = error_of([&] { export_draft(dir / "ckpt", dir / "out"); });
    INFO(msg);
    CHECK(msg.find("--target") != std::string::npos);
    CHECK(msg.find("--no-embeddings") != std::string::npos);
    CHECK(!eaglet::io::path_exists(dir / "out"));
  }
  SECTION("--no-embeddings") {
    eaglet::io::ExportOptions opt;
    opt.embeddings = false;
    export_draft(dir / "ckpt", dir / "out", opt);
    SafetensorsFile out(dir / "out/model.safetensors");
    CHECK(!out.has("embed_tokens.weight"));
    CHECK(out.tensors().size() == weights.size());
  }
  SECTION("--target: the target's model.embed_tokens.weight, cast to bf16") {
    at::Tensor embed = at::randn({256, 64}, at::kFloat);
    eaglet::io::make_dirs(dir / "target");
    eaglet::io::write_safetensors(dir / "target/model.safetensors",
                                  {{"model.embed_tokens.weight", embed}});
    eaglet::io::ExportOptions opt;
    opt.target = dir / "target";
    export_draft(dir / "ckpt", dir / "out", opt);
    SafetensorsFile out(dir / "out/model.safetensors");
    REQUIRE(out.has("embed_tokens.weight"));
    CHECK(out.info("embed_tokens.weight").dtype == "BF16");
    CHECK(at::equal(out.get("embed_tokens.weight"), embed.to(at::kBFloat16)));
  }
  SECTION("a target embedding of the wrong shape is refused") {
    eaglet::io::make_dirs(dir / "target");
    eaglet::io::write_safetensors(dir / "target/model.safetensors",
                                  {{"model.embed_tokens.weight", at::randn({256, 32})}});
    eaglet::io::ExportOptions opt;
    opt.target = dir / "target";
    std::string msg = error_of([&] { export_draft(dir / "ckpt", dir / "out", opt); });
    INFO(msg);
    CHECK(msg.find("[256, 32]") != std::string::npos);
    CHECK(msg.find("[256, 64]") != std::string::npos);
  }
}

TEST_CASE("export: aux layer ids under the names SGLang and vLLM read", "[io][export]") {
  TempDir dir("export_aux");
  auto read_cfg = [&] {
    return nlohmann::json::parse(eaglet::test::read_bytes(dir / "out/config.json"));
  };
  auto check_ids = [](const nlohmann::json& cfg, std::vector<int64_t> ids) {
    CHECK(cfg["eagle_aux_hidden_state_layer_ids"] == nlohmann::json(ids));
    CHECK(cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == nlohmann::json(ids));
    CHECK(cfg["eagle_config"]["use_aux_hidden_state"] == true);
  };
  SECTION("from the checkpoint config's eagle_config") {
    auto cfg = tiny_config();
    cfg["eagle_config"] = {{"eagle_aux_hidden_state_layer_ids", {1, 14, 26}}};
    write_checkpoint(dir / "ckpt", cfg, tiny_weights());
    export_draft(dir / "ckpt", dir / "out");
    check_ids(read_cfg(), {1, 14, 26});
  }
  SECTION("from the top-level key") {
    auto cfg = tiny_config();
    cfg["eagle_aux_hidden_state_layer_ids"] = {2, 5, 9};
    write_checkpoint(dir / "ckpt", cfg, tiny_weights());
    export_draft(dir / "ckpt", dir / "out");
    check_ids(read_cfg(), {2, 5, 9});
  }
  SECTION("the option wins over the config") {
    auto cfg = tiny_config();
    cfg["eagle_aux_hidden_state_layer_ids"] = {2, 5, 9};
    write_checkpoint(dir / "ckpt", cfg, tiny_weights());
    eaglet::io::ExportOptions opt;
    opt.aux_layer_ids = {1, 14, 26};
    export_draft(dir / "ckpt", dir / "out", opt);
    check_ids(read_cfg(), {1, 14, 26});
  }
  SECTION("none known: no key written") {
    write_checkpoint(dir / "ckpt", tiny_config(), tiny_weights());
    export_draft(dir / "ckpt", dir / "out");
    auto cfg = read_cfg();
    CHECK(!cfg.contains("eagle_aux_hidden_state_layer_ids"));
    CHECK(!cfg.contains("eagle_config"));
  }
  SECTION("a malformed list is refused, naming the key") {
    auto cfg = tiny_config();
    cfg["eagle_aux_hidden_state_layer_ids"] = {1, -2, 3};
    write_checkpoint(dir / "ckpt", cfg, tiny_weights());
    std::string msg = error_of([&] { export_draft(dir / "ckpt", dir / "out"); });
    CHECK(msg.find("eagle_aux_hidden_state_layer_ids") != std::string::npos);
  }
}

TEST_CASE("export: the eaglet export command", "[io][export][cli]") {
  TempDir dir("export_cli");
  write_checkpoint(dir / "ckpt", tiny_config(), tiny_weights());
  const std::string bin = eaglet_binary();
  REQUIRE(eaglet::io::path_exists(bin));
  auto r = eaglet::test::run_command("'" + bin + "' export --checkpoint '" + (dir / "ckpt") +
                                     "' --out '" + (dir / "out") + "' --vllm --aux-layer-ids 1,14,26");
  INFO(r.output);
  CHECK(r.code == 0);
  // --vllm is accepted with a warning and changes nothing: SGLang names, which vLLM renames.
  CHECK(r.output.find("--vllm is no longer needed") != std::string::npos);
  CHECK(SafetensorsFile(dir / "out/model.safetensors").has("midlayer.hidden_norm.weight"));
  CHECK(nlohmann::json::parse(eaglet::test::read_bytes(dir / "out/config.json"))
            ["eagle_aux_hidden_state_layer_ids"] == nlohmann::json({1, 14, 26}));

  SECTION("an existing non-empty output folder is refused and kept") {
    auto again = eaglet::test::run_command("'" + bin + "' export --checkpoint '" + (dir / "ckpt") +
                                           "' --out '" + (dir / "out") + "'");
    INFO(again.output);
    CHECK(again.code == 2);
    CHECK(again.output.find(dir / "out") != std::string::npos);
    CHECK(SafetensorsFile(dir / "out/model.safetensors").has("midlayer.hidden_norm.weight"));
  }
  SECTION("a bad --aux-layer-ids exits 2 naming the option") {
    auto bad = eaglet::test::run_command("'" + bin + "' export --checkpoint '" + (dir / "ckpt") +
                                         "' --out '" + (dir / "y") + "' --aux-layer-ids 1,x");
    CHECK(bad.code == 2);
    CHECK(bad.output.find("--aux-layer-ids") != std::string::npos);
  }
  SECTION("missing options exit 2 with a message") {
    auto bad = eaglet::test::run_command("'" + bin + "' export --out '" + (dir / "x") + "'");
    CHECK(bad.code == 2);
    CHECK(bad.output.find("--checkpoint") != std::string::npos);
  }
}

TEST_CASE("export: bad checkpoints are refused, naming file and tensor, leaving nothing",
          "[io][export]") {
  TempDir dir("export_bad");
  const std::string ckpt = dir / "ckpt", out = dir / "out";
  auto refused = [&](std::vector<std::string> needles) {
    std::string msg = error_of([&] { export_draft(ckpt, out); });
    INFO(msg);
    REQUIRE(!msg.empty());
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    CHECK(!eaglet::io::path_exists(out));
    CHECK(!eaglet::io::path_exists(out + ".tmp"));
  };
  const std::string weights = ckpt + "/model.safetensors", config = ckpt + "/config.json";

  SECTION("a missing tensor") {
    write_checkpoint(ckpt, tiny_config(), without(tiny_weights(), "midlayer.mlp.up_proj.weight"));
    refused({weights, "'midlayer.mlp.up_proj.weight'"});
  }
  SECTION("a missing d2t") {
    write_checkpoint(ckpt, tiny_config(), without(tiny_weights(), "d2t"));
    refused({weights, "'d2t'"});
  }
  SECTION("a wrong shape: file, tensor, both shapes") {
    auto w = tiny_weights();
    for (auto& [name, t] : w)
      if (name == "midlayer.self_attn.k_proj.weight") t = at::randn({64, 128});
    write_checkpoint(ckpt, tiny_config(), w);
    refused({weights, "'midlayer.self_attn.k_proj.weight'", "[64, 128]", "[32, 128]"});
  }
  SECTION("a config that disagrees with the weights (target_hidden_size)") {
    write_checkpoint(ckpt, tiny_config(128), tiny_weights(64));
    refused({weights, "'fc.weight'", "[64, 192]", "[64, 384]"});
  }
  SECTION("a wrong dtype for d2t") {
    auto w = tiny_weights();
    for (auto& [name, t] : w)
      if (name == "d2t") t = t.to(at::kInt);
    write_checkpoint(ckpt, tiny_config(), w);
    refused({weights, "'d2t'", "I32"});
  }
  SECTION("d2t pointing at a target id t2d does not mark") {
    auto w = tiny_weights();
    for (auto& [name, t] : w)
      if (name == "d2t") t.data_ptr<int64_t>()[5] = 2;  // draft 5 -> target 7, not marked
    write_checkpoint(ckpt, tiny_config(), w);
    refused({weights, "'d2t'", "draft id 5", "target id 7"});
  }
  SECTION("an unexpected tensor") {
    auto w = tiny_weights();
    w.emplace_back("midlayer.self_attn.q_proj.bias", at::zeros({64}));
    write_checkpoint(ckpt, tiny_config(), w);
    refused({weights, "midlayer.self_attn.q_proj.bias"});
  }
  SECTION("a missing config.json or model.safetensors") {
    write_checkpoint(ckpt, tiny_config(), tiny_weights());
    ::unlink(config.c_str());
    refused({config});
    write_checkpoint(ckpt, tiny_config(), tiny_weights());
    ::unlink(weights.c_str());
    refused({weights});
  }
  SECTION("a config key missing") {
    auto cfg = tiny_config();
    cfg.erase("draft_vocab_size");
    write_checkpoint(ckpt, cfg, tiny_weights());
    refused({config, "draft_vocab_size"});
  }
  SECTION("a config contradicting the draft architecture") {
    auto cfg = tiny_config();
    cfg["hidden_act"] = "gelu";
    write_checkpoint(ckpt, cfg, tiny_weights());
    refused({config, "hidden_act"});
  }
}

TEST_CASE("export: config.json keeps rope scaling and drops a 'default' one", "[io][export]") {
  auto cfg = tiny_config();
  cfg["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  auto out = eaglet::io::export_config(cfg, "config.json");
  CHECK(out["rope_scaling"]["rope_type"] == "llama3");
  CHECK(out["rope_scaling"]["factor"] == 8.0);
  CHECK(out["architectures"] == nlohmann::json::array({"LlamaForCausalLMEagle3"}));
  CHECK(out.begin().key() == "architectures");
  cfg["rope_scaling"] = {{"rope_type", "default"}};
  CHECK(eaglet::io::export_config(cfg, "config.json")["rope_scaling"].is_null());
  cfg.erase("rope_scaling");
  CHECK(eaglet::io::export_config(cfg, "config.json")["rope_scaling"].is_null());
}
