// load_target_head: a tiny sharded HF folder, tied and untied, values converted to fp32 exactly,
// shape errors naming folder, tensor and shapes.
#include <ATen/core/Tensor.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/from_blob.h>

#include <nlohmann/json.hpp>

#include "catch.h"
#include "io/hf_target.h"
#include "io/safetensors.h"
#include "test_files.h"

using eaglet::io::load_target_head;
using eaglet::test::error_of;
using eaglet::test::TempDir;

namespace {

const std::string kEmbed = "model.embed_tokens.weight", kHead = "lm_head.weight",
                  kNorm = "model.norm.weight";

// Vt 32, Ht 16. Values are multiples of 1/8 or 1/16 with at most 7 significant bits, so they are
// exact in bf16 (8 bits) and fp32 and the comparisons below can be exact.
at::Tensor values(int64_t n, int64_t modulo, double scale, double shift,
                  std::vector<int64_t> shape) {
  std::vector<double> v(n);
  for (int64_t k = 0; k < n; ++k) v[k] = static_cast<double>((k * 7) % modulo) * scale + shift;
  return at::from_blob(v.data(), shape, at::kDouble).clone();
}
at::Tensor embed() {
  return values(32 * 16, 64, 1.0 / 8, -4, {32, 16});
}
at::Tensor head() {
  return values(32 * 16, 61, -1.0 / 16, 0, {32, 16});
}
at::Tensor norm() {
  return values(16, 16, 1.0 / 8, 1, {16});
}

// Two shards + index, like an HF checkpoint: embedding in the first, norm and lm_head in the
// second (lm_head left out when `with_lm_head` is false).
void write_folder(const TempDir& dir, bool tie, bool with_lm_head, int64_t norm_size = 16) {
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                        {"hidden_size", 16},
                        {"vocab_size", 32},
                        {"rms_norm_eps", 1e-5},
                        {"tie_word_embeddings", tie}};
  eaglet::test::write_bytes(dir / "config.json", cfg.dump());
  eaglet::io::write_safetensors(dir / "a.safetensors", {{kEmbed, embed().to(at::kBFloat16)}});
  std::vector<std::pair<std::string, at::Tensor>> second = {
      {kNorm, values(norm_size, 16, 1.0 / 8, 1, {norm_size}).to(at::kBFloat16)}};
  if (with_lm_head) second.emplace_back(kHead, head().to(at::kBFloat16));
  eaglet::io::write_safetensors(dir / "b.safetensors", second);
  nlohmann::json index = {{"weight_map", {{kEmbed, "a.safetensors"}, {kNorm, "b.safetensors"}}}};
  if (with_lm_head) index["weight_map"][kHead] = "b.safetensors";
  eaglet::test::write_bytes(dir / "model.safetensors.index.json", index.dump());
}

}  // namespace

TEST_CASE("load_target_head: untied folder", "[io][target]") {
  TempDir dir("target_untied");
  write_folder(dir, false, true);
  auto t = load_target_head(dir.str(), kEmbed, kHead, kNorm);
  CHECK(!t.tied);
  CHECK(t.rms_norm_eps == 1e-5);
  CHECK(t.embed_tokens.scalar_type() == at::kFloat);
  CHECK(t.lm_head.scalar_type() == at::kFloat);
  CHECK(t.norm.scalar_type() == at::kFloat);
  CHECK(t.embed_tokens.device().is_cpu());
  CHECK(at::equal(t.embed_tokens, embed().to(at::kFloat)));
  CHECK(at::equal(t.lm_head, head().to(at::kFloat)));
  CHECK(at::equal(t.norm, norm().to(at::kFloat)));
  CHECK(t.lm_head.data_ptr<float>()[9] == -0.125f);  // -((9 * 7) % 61) / 16
}

TEST_CASE("load_target_head: tied embeddings", "[io][target]") {
  TempDir dir("target_tied");
  SECTION("tie_word_embeddings true: the embedding even when an lm_head exists") {
    write_folder(dir, true, true);
    auto t = load_target_head(dir.str(), kEmbed, kHead, kNorm);
    CHECK(t.tied);
    CHECK(at::equal(t.lm_head, embed().to(at::kFloat)));
  }
  SECTION("no lm_head tensor: the embedding") {
    write_folder(dir, false, false);
    auto t = load_target_head(dir.str(), kEmbed, kHead, kNorm);
    CHECK(t.tied);
    CHECK(at::equal(t.lm_head, embed().to(at::kFloat)));
    CHECK(at::equal(t.norm, norm().to(at::kFloat)));
  }
}

TEST_CASE("load_target_head: errors name the folder, the tensor and the shapes", "[io][target]") {
  TempDir dir("target_errors");
  SECTION("a shape that disagrees with config.json") {
    write_folder(dir, false, true, 8);
    std::string msg = error_of([&] { load_target_head(dir.str(), kEmbed, kHead, kNorm); });
    INFO(msg);
    CHECK(msg.find(dir.str()) != std::string::npos);
    CHECK(msg.find("'" + kNorm + "'") != std::string::npos);
    CHECK(msg.find("[8]") != std::string::npos);
    CHECK(msg.find("[16]") != std::string::npos);
  }
  SECTION("a missing embedding (a wrong key)") {
    write_folder(dir, false, true);
    std::string msg = error_of([&] { load_target_head(dir.str(), "embed.weight", kHead, kNorm); });
    INFO(msg);
    CHECK(msg.find(dir.str()) != std::string::npos);
    CHECK(msg.find("'embed.weight'") != std::string::npos);
    CHECK(msg.find(kEmbed) != std::string::npos);  // listed among the available names
  }
  SECTION("a config.json without hidden_size") {
    write_folder(dir, false, true);
    eaglet::test::write_bytes(dir / "config.json", R"({"vocab_size": 32, "rms_norm_eps": 1e-5})");
    std::string msg = error_of([&] { load_target_head(dir.str(), kEmbed, kHead, kNorm); });
    CHECK(msg.find(dir / "config.json") != std::string::npos);
    CHECK(msg.find("hidden_size") != std::string::npos);
  }
}
