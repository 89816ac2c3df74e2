// Producers: sharding a full sample into the store, full-sample files, and the synthetic teacher.
#include "data/synth.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "core/tensor_text.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace eaglet::data {
namespace {

// splitmix64: independent per-sample seeds from (seed, index).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // [lo, hi], portable
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(rng() % span);
}

}  // namespace

ManifestEntry put_sample(Store& store, ManifestWriter& manifest, const std::string& key,
                         const FullSample& sample, const ManifestExpect& layout, bool sharded,
                         const std::vector<int64_t>& segments) {
  check_key(key);
  check_full_sample(sample, "sample " + key);
  const int64_t num_aux = sample.hs.size(1) / sample.lhs.size(1);
  EAGLET_CHECK(layout.num_aux <= 0 || num_aux == layout.num_aux,
               "sample {}: {} aux layers (hidden_states {}, Ht={}), but the layout takes {} "
               "(model.config.num_aux_hidden_states)",
               key, num_aux, shape_text(sample.hs.sizes()), sample.lhs.size(1),
               layout.num_aux);
  const std::string first =
      sharded ? object_key(key, 0, ShardObject::hs) : full_object_key(key, ShardObject::hs);
  EAGLET_CHECK(!store.exists(first),
               "sample {}: already in the {} store ({} exists); choose another key", key,
               store.backend(), first);
  FullSample stored{sample.hs.to(at::kBFloat16).contiguous(), sample.ids.to(at::kLong).contiguous(),
                    sample.lhs.to(at::kBFloat16).contiguous(), sample.loss_mask};
  ManifestEntry e;
  e.key = key;
  e.seq_len = stored.ids.size(0);
  e.hidden_size = stored.lhs.size(1);
  e.num_aux = num_aux;
  e.packed_loss_mask = pack_loss_mask(sample.loss_mask);
  e.sp_size = layout.sp_size;
  e.ttt_length = layout.ttt_length;
  e.max_seq_length = layout.max_seq_length;
  e.usp_sharded = sharded;
  if (!segments.empty()) {
    check_segments(segments, e.seq_len);
    e.segments = segments;
  }
  if (!sharded) {
    const at::Tensor* parts[] = {&stored.hs, &stored.ids, &stored.lhs};
    for (size_t i = 0; i < 3; ++i)
      store.put(full_object_key(key, kShardObjects[i]), parts[i]->data_ptr(),
                static_cast<int64_t>(parts[i]->nbytes()));
    manifest.append(e);
    return e;
  }
  const auto g = shard_geometry(e.seq_len, e.max_seq_length, e.sp_size, e.ttt_length);
  for (int64_t s = 0; s < g.sp_size; ++s) {
    const auto shard = slice_shard(stored, g, s);
    const at::Tensor* parts[] = {&shard.hs, &shard.ids, &shard.lhs};
    for (size_t i = 0; i < 3; ++i) {
      const at::Tensor t = parts[i]->contiguous();
      store.put(object_key(key, s, kShardObjects[i]), t.data_ptr(),
                static_cast<int64_t>(t.nbytes()));
    }
  }
  manifest.append(e);  // only now: the sample becomes visible to readers
  return e;
}

FullSample read_full_sample(const std::string& path) {
  io::SafetensorsFile f(path);
  FullSample s{f.get("hidden_states"), f.get("input_ids"), f.get("last_hidden_states"),
               f.get("loss_mask")};
  EAGLET_CHECK(at::isIntegralType(s.ids.scalar_type(), /*includeBool=*/false),
               "{}: input_ids must be integers, got {}", path, tensor_text(s.ids));
  EAGLET_CHECK(at::isFloatingType(s.hs.scalar_type()) && at::isFloatingType(s.lhs.scalar_type()),
               "{}: hidden_states and last_hidden_states must be floating point, got {} and {}",
               path, tensor_text(s.hs), tensor_text(s.lhs));
  check_full_sample(s, path);
  return s;
}

void write_full_sample(const std::string& path, const FullSample& s) {
  io::write_safetensors(path, {{"hidden_states", s.hs},
                               {"input_ids", s.ids.to(at::kLong)},
                               {"last_hidden_states", s.lhs},
                               {"loss_mask", s.loss_mask.ne(0).to(at::kLong)}});
}

Teacher make_teacher(int64_t vocab_size, int64_t hidden_size, int64_t seed, double rms_norm_eps) {
  EAGLET_CHECK(vocab_size >= 2 && hidden_size >= 1,
               "synthetic teacher: vocab_size {} and hidden_size {} (need >= 2 and >= 1)",
               vocab_size, hidden_size);
  auto gen = at::detail::createCPUGenerator(mix(static_cast<uint64_t>(seed)));
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hidden_size));
  Teacher t;
  t.embed = at::randn({vocab_size, hidden_size}, gen, f32);
  t.recur = at::randn({hidden_size, hidden_size}, gen, f32) * scale;
  t.aux1 = at::randn({hidden_size, hidden_size}, gen, f32) * scale;
  t.aux2 = at::randn({hidden_size, hidden_size}, gen, f32) * scale;
  t.norm = at::ones({hidden_size}, f32);
  // Logits W·lhs with unit-RMS lhs have a standard deviation of ~3: peaked, not deterministic.
  t.lm_head = at::randn({vocab_size, hidden_size}, gen, f32) * (3.0 * scale);
  t.rms_norm_eps = rms_norm_eps;
  return t;
}

FullSample teacher_sample(const Teacher& t, int64_t length, uint64_t seed, int64_t num_aux) {
  EAGLET_CHECK(length >= 1, "synthetic sample of {} tokens", length);
  EAGLET_CHECK(num_aux >= 1, "synthetic sample with {} aux layers (need >= 1)", num_aux);
  auto gen = at::detail::createCPUGenerator(mix(seed));
  std::mt19937_64 rng(mix(seed ^ 0x5bd1e995ULL));
  const int64_t V = t.embed.size(0), H = t.embed.size(1);
  auto ids = at::empty({length}, at::TensorOptions().dtype(at::kLong));
  auto* id = ids.data_ptr<int64_t>();
  auto hs = at::empty({length, num_aux * H}, at::TensorOptions().dtype(at::kFloat));
  auto lhs = at::empty({length, H}, at::TensorOptions().dtype(at::kFloat));
  id[0] = uniform(rng, 0, V - 1);
  auto h = at::zeros({H}, at::TensorOptions().dtype(at::kFloat));
  for (int64_t i = 0; i < length; ++i) {
    h = at::tanh(at::matmul(t.recur, h) * t.alpha + t.embed[id[i]]);
    // aux_0 = h, aux_j = tanh(B aux_{j-1}) with B alternating B1, B2: [h, a2, a3] for 3.
    std::vector<at::Tensor> aux{h};
    for (int64_t j = 1; j < num_aux; ++j)
      aux.push_back(at::tanh(at::matmul(j % 2 == 1 ? t.aux1 : t.aux2, aux.back())));
    hs[i].copy_(at::cat(aux));
    auto last = h * at::rsqrt((h * h).mean() + t.rms_norm_eps) * t.norm;
    lhs[i].copy_(last);
    if (i + 1 < length) {
      auto probs = at::softmax(at::matmul(t.lm_head, last), 0);
      id[i + 1] = at::multinomial(probs, 1, false, gen).item<int64_t>();
    }
  }
  // Loss mask: a prompt (0-run), then answers (1-runs) separated by short gaps.
  auto mask = at::zeros({length}, at::TensorOptions().dtype(at::kLong));
  auto* m = mask.data_ptr<int64_t>();
  int64_t pos = uniform(rng, length / 8, length / 2);
  while (pos < length) {
    const int64_t answer = uniform(rng, 8, 64);
    for (int64_t j = pos; j < std::min(length, pos + answer); ++j) m[j] = 1;
    pos += answer + uniform(rng, 2, 16);
  }
  return {hs.to(at::kBFloat16), ids, lhs.to(at::kBFloat16), mask};
}

void write_teacher_target(const Teacher& t, const std::string& dir) {
  io::make_dirs(dir);
  io::write_safetensors(io::join_path(dir, "model.safetensors"),
                        {{"model.embed_tokens.weight", t.embed},
                         {"model.norm.weight", t.norm},
                         {"lm_head.weight", t.lm_head}},
                        {{"format", "pt"}});
  nlohmann::ordered_json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", t.embed.size(1)},
      {"vocab_size", t.embed.size(0)},
      {"rms_norm_eps", t.rms_norm_eps},
      {"tie_word_embeddings", false},
      {"torch_dtype", "float32"},
      {"eaglet_synthetic_teacher", true},
  };
  const std::string path = io::join_path(dir, "config.json"), tmp = path + ".tmp";
  io::write_file_synced(tmp, config.dump(2) + "\n");
  EAGLET_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "{}: cannot rename {} into place", path,
               tmp);
  io::fsync_parent_dir(path);
}

SynthSummary synthesize(const Config& cfg, const SynthOptions& opt) {
  ManifestExpect layout = manifest_expect(cfg);
  if (opt.num_aux > 0) layout.num_aux = opt.num_aux;
  EAGLET_CHECK(layout.num_aux >= 1, "eaglet data synth: --num-aux {} (must be >= 1)",
               layout.num_aux);
  const int64_t L = cfg.data.max_seq_length, T = cfg.training.ttt_length;
  const int64_t min_len = opt.min_len > 0 ? opt.min_len : std::max(T + 2, L / 4);
  const int64_t max_len = opt.max_len > 0 ? opt.max_len : std::max(min_len, L + L / 4);
  EAGLET_CHECK(opt.samples >= 1, "eaglet data synth: --samples {} (must be >= 1)", opt.samples);
  EAGLET_CHECK(min_len >= 1 && min_len <= max_len,
               "eaglet data synth: lengths [{}, {}] (need 1 <= min <= max)", min_len, max_len);
  const auto& arch = cfg.model.config;

  SynthSummary sum;
  sum.target_dir = opt.target_dir.empty() ? io::join_path(cfg.data.path, "target") : opt.target_dir;
  sum.manifest = manifest_path(cfg.data);
  const std::string prefix =
      opt.key_prefix.empty() ? fmt::format("synth{}", opt.seed) : opt.key_prefix;

  auto store = open_store(cfg.data);
  ManifestWriter manifest(sum.manifest);
  const Teacher teacher =
      make_teacher(arch.vocab_size, arch.target_hidden_size, opt.seed, arch.rms_norm_eps);
  write_teacher_target(teacher,
                       sum.target_dir);  // first: a trainer following the manifest needs it
  if (!opt.full_dir.empty()) io::make_dirs(opt.full_dir);

  EAGLET_CHECK(opt.documents >= 1, "eaglet data synth: --documents {} (must be >= 1)",
               opt.documents);
  EAGLET_CHECK(opt.documents <= min_len,
               "eaglet data synth: --documents {} in samples of {} tokens or fewer", opt.documents,
               min_len);
  std::mt19937_64 rng(mix(static_cast<uint64_t>(opt.seed) + 1));
  std::mt19937_64 cut_rng(mix(static_cast<uint64_t>(opt.seed) + 2));  // lengths stay as without
  const int64_t P = layout.sp_size;
  for (int64_t i = 0; i < opt.samples; ++i) {
    int64_t len = uniform(rng, min_len, max_len);
    // Always cover the edge cases the readers must handle: a sample cut to max_seq_length, and
    // one whose length is coprime to 210 (tail padding for every P in 2..10). Lengths never depend
    // on P: the same seed gives the same samples for every layout (equivalence tests rely on it).
    if (i == 0) len = max_len;
    if (i == 1) {
      int64_t c = std::min(max_len, L);
      while (c > min_len && std::gcd(c, int64_t{210}) != 1) --c;
      len = c;
    }
    const std::string key = fmt::format("{}_{:06d}", prefix, i);
    FullSample s =
        teacher_sample(teacher, len, mix(static_cast<uint64_t>(opt.seed)) + i, layout.num_aux);
    // A packed sample: documents - 1 distinct cut points in [1, len).
    std::vector<int64_t> segments;
    if (opt.documents > 1) {
      std::set<int64_t> cuts;
      while (static_cast<int64_t>(cuts.size()) < opt.documents - 1)
        cuts.insert(uniform(cut_rng, 1, len - 1));
      int64_t prev = 0;
      for (int64_t c : cuts) {
        segments.push_back(c - prev);
        prev = c;
      }
      segments.push_back(len - prev);
    }
    put_sample(*store, manifest, key, s, layout, opt.sharded, segments);
    if (!opt.full_dir.empty())
      write_full_sample(io::join_path(opt.full_dir, key + ".safetensors"), s);
    sum.samples++;
    sum.tokens += len;
    const int64_t cut = std::min(len, L);
    sum.loss_tokens += s.loss_mask.narrow(0, 0, cut).sum().item<int64_t>();
    sum.longer_than_max += len > L;
    sum.not_divisible += cut % P != 0;
  }
  return sum;
}

}  // namespace eaglet::data
