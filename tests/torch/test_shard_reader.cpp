// Producer -> store -> reader on one process: put_sample then fetch_shard for every SP rank checked
// against the full sample cut by the reference; the decision (fail / neutralise / no loss tokens)
// on a one-rank SP group; data.consume; the CPU prefetcher (order, replicas, errors, shutdown);
// full-sample files; and the synthetic teacher's learnability.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/eq.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/linalg_lstsq.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include "catch.h"
#include "data/dir_store.h"
#include "data/prefetcher.h"
#include "data/shard_reader.h"
#include "data/synth.h"
#include "dist/communicator.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "test_files.h"

using namespace eaglet::data;
using eaglet::test::error_of;
using eaglet::test::TempDir;

namespace {

// An SP group of one rank: collectives are identities.
class SoloCommunicator final : public eaglet::Communicator {
 public:
  const char* backend() const override { return "solo"; }
  int64_t size() const override { return 1; }
  int64_t rank() const override { return 0; }
  const std::vector<int64_t>& members() const override { return members_; }
  void all_to_all(const at::Tensor& in, const at::Tensor& out) override { out.copy_(in); }
  std::unique_ptr<eaglet::Work> send_recv(const at::Tensor& send, int64_t, const at::Tensor& recv,
                                          int64_t) override {
    recv.copy_(send);
    return nullptr;
  }
  void all_reduce(const at::Tensor&, eaglet::ReduceOp) override {}
  void broadcast(const at::Tensor&, int64_t) override {}
  void barrier() override {}
  void abort() noexcept override {}

 private:
  std::vector<int64_t> members_{0};
};

FullSample random_sample(int64_t S, int64_t ht, uint64_t seed, double loss_fraction = 0.5,
                         int64_t num_aux = 3) {
  auto gen = at::detail::createCPUGenerator(seed);
  FullSample s;
  s.hs = at::randn({S, num_aux * ht}, gen, at::TensorOptions().dtype(at::kFloat));
  s.lhs = at::randn({S, ht}, gen, at::TensorOptions().dtype(at::kFloat));
  s.ids = at::randint(0, 1000, {S}, gen, at::TensorOptions().dtype(at::kLong));
  s.loss_mask =
      (at::rand({S}, gen, at::TensorOptions().dtype(at::kFloat)) < loss_fraction).to(at::kLong);
  return s;
}

ReaderOptions options(int64_t P, int64_t s, int64_t U, int64_t T, int64_t max_len, int64_t ht) {
  ReaderOptions o;
  o.sp_size = P;
  o.sp_rank = s;
  o.ulysses = U;
  o.ring_rank = s / U;
  o.ttt_length = T;
  o.max_seq_length = max_len;
  o.hidden_size = ht;
  o.manifest_path = "m.jsonl";
  return o;
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::equal(a, b);
}

// A store + manifest with `n` random samples for layout (P, T, max_len).
struct Fixture {
  TempDir dir{"reader"};
  DirStore store{dir / "store"};
  std::string manifest = dir / "store/manifest.jsonl";
  std::vector<FullSample> samples;
  ManifestExpect layout;
  Fixture(int64_t n, ManifestExpect l, int64_t ht, std::vector<int64_t> lengths = {}) : layout(l) {
    ManifestWriter w(manifest);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t S = lengths.empty() ? 5 + 7 * i : lengths[static_cast<size_t>(i)];
      samples.push_back(random_sample(S, ht, 100 + i));
      put_sample(store, w, "s" + std::to_string(i), samples.back(), layout);
    }
  }
  std::unique_ptr<ManifestReader> reader() {
    auto r = std::make_unique<ManifestReader>(manifest, layout);
    r->poll();
    return r;
  }
};

}  // namespace

TEST_CASE("put_sample then fetch_shard on every SP rank equals the reference cut", "[data]") {
  const int64_t ht = 4, max_len = 24;
  for (int64_t U : {1, 2})
    for (int64_t R : {1, 2, 3})
      for (int64_t T : {1, 3}) {
        const int64_t P = U * R;
        // Lengths: shorter than P, not divisible by P, divisible, longer than max_len.
        Fixture fx(5, {P, T, max_len, ht}, ht, {2, 11, 12, 24, 37});
        auto manifest = fx.reader();
        REQUIRE(manifest->size() == 5);
        for (int64_t i = 0; i < 5; ++i) {
          const auto& rec = manifest->at(i);
          REQUIRE(rec.ok());
          const auto& full = fx.samples[static_cast<size_t>(i)];
          FullSample stored{full.hs.to(at::kBFloat16), full.ids, full.lhs.to(at::kBFloat16),
                            full.loss_mask};
          const auto g = shard_geometry(full.ids.size(0), max_len, P, T);
          const auto mask = unpack_loss_mask(rec.entry.packed_loss_mask);
          int64_t tokens = 0;
          for (int64_t s = 0; s < P; ++s) {
            INFO("U=" << U << " R=" << R << " T=" << T << " sample " << i << " s=" << s);
            auto f = fetch_shard(fx.store, rec, options(P, s, U, T, max_len, ht), 17);
            REQUIRE(f.problem.kind == ProblemKind::none);
            REQUIRE(f.position == 17);
            const auto want = reference_shard(stored, g, s);
            REQUIRE(same(f.hs, want.hs));
            REQUIRE(same(f.ids, want.ids));
            REQUIRE(same(f.lhs, want.lhs));
            REQUIRE(same(f.loss_mask, shard_loss_mask(mask, g, s)));
            REQUIRE(same(f.attention_mask, shard_attention_mask(g, s)));
            REQUIRE(same(f.positions, ring_chunk_positions(g, U, s / U)));
            for (int64_t j = 0; j < g.local_len; ++j) {
              const int64_t row = s * g.chunk + j;
              REQUIRE(f.loss_mask[j].item<float>() ==
                      (row < g.length ? full.loss_mask[row].item<float>() : 0.f));
            }
            tokens += f.local_loss_tokens;
          }
          REQUIRE(tokens == full.loss_mask.narrow(0, 0, g.length).sum().item<int64_t>());
        }
      }
}

TEST_CASE("unsharded samples (usp_sharded false) read bit for bit like pre-sharded ones",
          "[data]") {
  // The same samples written both ways; every SP rank of every layout gets identical tensors,
  // for 2, 3 and 4 aux layers and SGLang-path keys; each rank preads only its rows.
  const int64_t ht = 4, max_len = 24;
  for (int64_t num_aux : {2, 3, 4})
    for (int64_t U : {1, 2})
      for (int64_t R : {1, 3})
        for (int64_t T : {0, 3}) {
          const int64_t P = U * R;
          const ManifestExpect layout{P, T, max_len, ht, num_aux};
          TempDir dir("unsharded");
          DirStore pre(dir / "pre"), full(dir / "full");
          ManifestWriter wpre(dir / "pre/manifest.jsonl"), wfull(dir / "full/manifest.jsonl");
          const std::vector<int64_t> lengths = {2, 11, 12, 24, 37};
          for (size_t i = 0; i < lengths.size(); ++i) {
            const auto s = random_sample(lengths[i], ht, 300 + i, 0.5, num_aux);
            const std::string key = "ultrachat.v2/conv:" + std::to_string(i) + "_1a2b";
            put_sample(pre, wpre, key, s, layout);
            const auto e = put_sample(full, wfull, key, s, layout, /*sharded=*/false);
            CHECK(!e.usp_sharded);
            CHECK(full.size(full_object_key(key, ShardObject::hs)) ==
                  lengths[i] * num_aux * ht * 2);  // all S rows, not cut
          }
          ManifestReader mpre(dir / "pre/manifest.jsonl", layout),
              mfull(dir / "full/manifest.jsonl", layout);
          REQUIRE(mpre.poll() == 5);
          REQUIRE(mfull.poll() == 5);
          for (int64_t i = 0; i < 5; ++i) {
            REQUIRE(mfull.at(i).ok());
            REQUIRE(!mfull.at(i).entry.usp_sharded);
            for (int64_t s = 0; s < P; ++s) {
              INFO("aux=" << num_aux << " U=" << U << " R=" << R << " T=" << T << " sample " << i
                          << " s=" << s);
              auto opt = options(P, s, U, T, max_len, ht);
              auto a = fetch_shard(pre, mpre.at(i), opt), b = fetch_shard(full, mfull.at(i), opt);
              REQUIRE(a.problem.kind == ProblemKind::none);
              REQUIRE(b.problem.kind == ProblemKind::none);
              REQUIRE(same(a.hs, b.hs));
              REQUIRE(same(a.ids, b.ids));
              REQUIRE(same(a.lhs, b.lhs));
              REQUIRE(same(a.loss_mask, b.loss_mask));
              REQUIRE(same(a.attention_mask, b.attention_mask));
              REQUIRE(same(a.positions, b.positions));
              REQUIRE(a.local_loss_tokens == b.local_loss_tokens);
              const auto g = a.geometry;
              REQUIRE(same(read_shard_ids(full, mfull.at(i).entry, g, s, "ids"), a.ids));
            }
          }
        }
}

TEST_CASE("unsharded samples: size errors name the full object; consume after the decision",
          "[data]") {
  const int64_t ht = 4;
  TempDir dir("unsharded_err");
  DirStore store(dir / "s");
  ManifestWriter w(dir / "s/manifest.jsonl");
  const ManifestExpect layout{1, 2, 16, ht};
  put_sample(store, w, "a.b", random_sample(10, ht, 1, 1.0), layout, false);
  put_sample(store, w, "c", random_sample(10, ht, 2, 1.0), layout, false);
  ManifestReader m(dir / "s/manifest.jsonl", layout);
  REQUIRE(m.poll() == 2);
  // A truncated object: a size problem with the whole object's expected bytes.
  store.put("a.b_lhs", "xx", 2);
  auto opt = options(1, 0, 1, 2, 16, ht);
  auto f = fetch_shard(store, m.at(0), opt);
  CHECK(f.problem.kind == ProblemKind::size);
  CHECK(f.problem.expected == 10 * ht * 2);
  CHECK(f.problem.actual == 2);
  SoloCommunicator solo;
  ShardReader reader(store, solo, opt);
  CHECK(error_of([&] { reader.read(m.at(0)); })
            .find("sample a.b (manifest m.jsonl:1): object a.b_lhs has 2 bytes, expected 80 bytes "
                  "= bfloat16 [10, 4]") != std::string::npos);
  // data.consume: the group's shared objects go once the SP group has read them.
  opt.consume = true;
  ShardReader consuming(store, solo, opt);
  auto sample = consuming.read(m.at(1));
  CHECK(!sample.neutralised);
  for (auto obj : kShardObjects) CHECK(!store.exists(full_object_key("c", obj)));
}

TEST_CASE("put_sample refuses a key already in the store and a malformed sample", "[data]") {
  Fixture fx(1, {2, 3, 64, 4}, 4);
  ManifestWriter w(fx.manifest);
  CHECK(error_of([&] {
          put_sample(fx.store, w, "s0", fx.samples[0], fx.layout);
        }).find("sample s0: already in the dir store (s0_usp0_hs exists)") != std::string::npos);
  auto bad = random_sample(10, 4, 1);
  bad.hs = bad.hs.narrow(1, 0, 6);
  CHECK(error_of([&] {
          put_sample(fx.store, w, "b", bad, fx.layout);
        }).find("sample b: hidden_states must be [10, num_aux*4] (num_aux aux layers of Ht=4), got "
                "[10, 6]") != std::string::npos);
  bad.hs = bad.hs.narrow(1, 0, 4);  // one aux layer: well formed, but not this run's num_aux (3)
  CHECK(error_of([&] {
          put_sample(fx.store, w, "b", bad, fx.layout);
        }).find("sample b: 1 aux layers (hidden_states [10, 4], Ht=4), but the layout takes 3") !=
        std::string::npos);
  CHECK(error_of([&] {
          put_sample(fx.store, w, std::string("bad\0key", 7), fx.samples[0], fx.layout);
        }).find("byte 3 is NUL") != std::string::npos);
}

TEST_CASE("shard reader on one rank: ok, dtype, no loss tokens, consume", "[data]") {
  const int64_t ht = 4, T = 3, max_len = 40;
  Fixture fx(3, {1, T, max_len, ht}, ht, {20, 50, 9});
  // Sample 3 has no loss token at all.
  {
    ManifestWriter w(fx.manifest);
    auto z = random_sample(15, ht, 9);
    z.loss_mask.zero_();
    put_sample(fx.store, w, "zero", z, fx.layout);
  }
  auto manifest = fx.reader();
  SoloCommunicator solo;
  auto opt = options(1, 0, 1, T, max_len, ht);
  opt.hidden_dtype = at::kFloat;
  ShardReader reader(fx.store, solo, opt);
  auto a = reader.read(manifest->at(1), 1);
  CHECK(!a.neutralised);
  CHECK(a.key == "s1");
  CHECK(a.position == 1);
  CHECK(a.input.hs.scalar_type() == at::kFloat);  // converted to the compute dtype
  CHECK(a.input.ids.scalar_type() == at::kLong);
  CHECK(a.input.hs.size(0) == max_len + T);  // 50 tokens cut to 40
  CHECK(same(a.input.lhs.narrow(0, 0, max_len),
             fx.samples[1].lhs.narrow(0, 0, max_len).to(at::kBFloat16).to(at::kFloat)));
  CHECK(a.global_loss_tokens ==
        fx.samples[1].loss_mask.narrow(0, 0, max_len).sum().item<int64_t>());
  auto z = reader.read(manifest->at(3));
  CHECK(z.neutralised);
  CHECK(z.reason.find("sample zero has no loss token") != std::string::npos);
  CHECK(reader.empty_samples() == 1);
  CHECK(reader.skipped_errors() == 0);

  // data.consume removes this rank's objects once read, and only them.
  auto copt = options(2, 1, 1, T, max_len, ht);
  copt.consume = true;
  Fixture two(1, {2, T, max_len, ht}, ht);
  auto m2 = two.reader();
  auto f = fetch_shard(two.store, m2->at(0), copt);
  CHECK(f.problem.kind == ProblemKind::none);
  for (auto obj : kShardObjects) {
    CHECK(!two.store.exists(object_key("s0", 1, obj)));
    CHECK(two.store.exists(object_key("s0", 0, obj)));
  }
}

TEST_CASE("shard reader errors: fail names key, rank and sizes; skip neutralises", "[data]") {
  const int64_t ht = 4, T = 2, max_len = 32;
  Fixture fx(4, {1, T, max_len, ht}, ht, {10, 12, 14, 16});
  // s0: lhs truncated; s1: hs missing; s2: ids too large; s3: fine.
  const std::string junk(100, 'j');
  fx.store.put("s0_usp0_lhs", junk.data(), 10);
  fx.store.remove("s1_usp0_hs");
  const std::string large(1000, 'x');
  fx.store.put("s2_usp0_ids", large.data(), 1000);
  // An invalid manifest line after them.
  {
    std::ofstream out(fx.manifest, std::ios::app);
    out << "{\"key\": \"broken\"}\n";
  }
  auto manifest = fx.reader();
  REQUIRE(manifest->size() == 5);
  SoloCommunicator solo;
  {
    ShardReader reader(fx.store, solo, options(1, 0, 1, T, max_len, ht));
    CHECK(error_of([&] { reader.read(manifest->at(0)); })
              .find("data: sample s0 (manifest m.jsonl:1): object s0_usp0_lhs has 10 bytes, "
                    "expected 96 bytes = bfloat16 [12, 4] (SP rank 0, world rank 0) "
                    "(data.on_error=fail") != std::string::npos);
    CHECK(
        error_of([&] { reader.read(manifest->at(1)); })
            .find("data: sample s1 (manifest m.jsonl:2): object s1_usp0_hs is not in the dir "
                  "store (consumed by an earlier run with data.consume=true, or never written) "
                  "(SP rank 0, world rank 0; expected 336 bytes = bfloat16 [14, 12])") !=
        std::string::npos);
    CHECK(error_of([&] {
            reader.read(manifest->at(2));
          }).find("object s2_usp0_ids has 1000 bytes, expected 128 bytes = int64 [16]") !=
          std::string::npos);
    CHECK(error_of([&] {
            reader.read(manifest->at(4));
          }).find("data: manifest " + fx.manifest + ":5: missing field \"seq_len\"") !=
          std::string::npos);
    CHECK(error_of([&] { reader.read(manifest->at(3)); }).empty());
  }
  auto opt = options(1, 0, 1, T, max_len, ht);
  opt.skip_errors = true;
  opt.consume = true;
  ShardReader reader(fx.store, solo, opt);
  for (int64_t i : {0, 1, 2}) {
    auto s = reader.read(manifest->at(i));
    CHECK(s.neutralised);
    CHECK(s.global_loss_tokens == 0);
    const int64_t local = shard_geometry(10 + 2 * i, max_len, 1, T).local_len;
    CHECK(s.input.hs.sizes() == at::IntArrayRef{local, 3 * ht});  // same shapes as the real shard
    CHECK(s.input.hs.abs().sum().item<double>() == 0);
    CHECK(s.input.loss_mask.sum().item<double>() == 0);
  }
  // A bad object is not consumed (kept for inspection); a good one is.
  CHECK(fx.store.exists("s0_usp0_hs"));
  auto bad_line = reader.read(manifest->at(4));
  CHECK(bad_line.neutralised);
  CHECK(bad_line.input.ids.size(0) == 1 + T);  // stand-in: one row per rank plus the halo
  CHECK(bad_line.input.lhs.size(1) == ht);
  CHECK(reader.skipped_errors() == 4);
  CHECK(!reader.read(manifest->at(3)).neutralised);
  CHECK(!fx.store.exists("s3_usp0_hs"));
}

TEST_CASE("prefetcher: stream order, replicas, depth, errors and shutdown", "[data]") {
  const int64_t ht = 4, T = 2, max_len = 32;
  Fixture fx(7, {1, T, max_len, ht}, ht);
  auto manifest = fx.reader();
  SoloCommunicator solo;
  ShardReader reader(fx.store, solo, options(1, 0, 1, T, max_len, ht));
  using ms = std::chrono::milliseconds;
  for (int64_t depth : {1, 3}) {
    for (int64_t D : {1, 2, 3}) {
      for (int64_t dp = 0; dp < D; ++dp) {
        Sampler sampler(7, 2, 5, true);
        Prefetcher pf(reader, replica_source(*manifest, sampler, dp, D, 0, ms(1000)), depth);
        int64_t expect = dp;
        while (auto s = pf.next()) {
          INFO("depth=" << depth << " D=" << D << " dp=" << dp);
          REQUIRE(s->position == expect);
          REQUIRE(s->key == "s" + std::to_string(sampler.index_at(expect)));
          REQUIRE(same(s->input.ids.narrow(0, 0, s->geometry.length),
                       fx.samples[sampler.index_at(expect)].ids.narrow(0, 0, s->geometry.length)));
          expect += D;
        }
        REQUIRE(expect >= 14);  // every position of the 2 epochs for this replica
      }
    }
  }
  // A growing manifest that stops growing: the samples so far, then the timeout error.
  {
    Sampler open(0, 1, 0, false);
    Prefetcher pf(reader, replica_source(*manifest, open, 0, 1, 4, ms(200)), 2);
    CHECK(pf.next()->key == "s4");
    CHECK(pf.next()->key == "s5");
    CHECK(pf.next()->key == "s6");
    CHECK(error_of([&] { pf.next(); }).find("waited") != std::string::npos);
  }
  // Destroyed while its source waits for a line that never comes: returns promptly.
  {
    const auto t0 = std::chrono::steady_clock::now();
    {
      Sampler open(0, 1, 0, false);
      Prefetcher pf(reader, replica_source(*manifest, open, 0, 1, 7, ms(600000)), 2);
      std::this_thread::sleep_for(ms(100));
    }
    CHECK(std::chrono::steady_clock::now() - t0 < ms(10000));
  }
  // Storage keeps up: after the queue filled, next() does not wait.
  {
    Sampler sampler(7, 1, 5, false);
    Prefetcher pf(reader, replica_source(*manifest, sampler, 0, 1, 0, ms(1000)), 3);
    std::this_thread::sleep_for(ms(300));
    const int64_t before = pf.stalls();
    pf.next();
    pf.next();
    CHECK(pf.stalls() == before);
  }
}

TEST_CASE("full sample files round trip and are checked", "[data]") {
  TempDir dir("fullsample");
  auto s = random_sample(9, 4, 3);
  write_full_sample(dir / "a.safetensors", s);
  auto back = read_full_sample(dir / "a.safetensors");
  CHECK(same(back.hs, s.hs));
  CHECK(same(back.ids, s.ids));
  CHECK(same(back.loss_mask, s.loss_mask));
  eaglet::io::write_safetensors(dir / "b.safetensors",
                                {{"hidden_states", s.hs}, {"input_ids", s.ids}});
  CHECK(error_of([&] { read_full_sample(dir / "b.safetensors"); }).find("last_hidden_states") !=
        std::string::npos);
  eaglet::io::write_safetensors(dir / "c.safetensors",
                                {{"hidden_states", s.hs},
                                 {"input_ids", s.ids},
                                 {"last_hidden_states", s.lhs},
                                 {"loss_mask", s.loss_mask.narrow(0, 0, 5)}});
  CHECK(error_of([&] {
          read_full_sample(dir / "c.safetensors");
        }).find("loss_mask must be [9], got [5]") != std::string::npos);
}

TEST_CASE("synthetic teacher: next token predictable from the stored hidden states", "[data]") {
  const int64_t V = 64, H = 32;
  const auto teacher = make_teacher(V, H, 1, 1e-6);
  // Deterministic from the seed.
  auto a = teacher_sample(teacher, 40, 9), b = teacher_sample(teacher, 40, 9);
  CHECK(same(a.ids, b.ids));
  CHECK(same(a.hs, b.hs));
  // Eagle3's task at row t: from hs[t] and token x[t+1], predict the distribution of x[t+2],
  // i.e. softmax(W lhs[t+1]). A least-squares linear read-out of lhs[t+1] from
  // [hs[t], E[x[t+1]], 1] already recovers the teacher's top token far above chance (1/V).
  std::vector<at::Tensor> xs, ys;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    auto s = teacher_sample(teacher, 200, 1000 + seed);
    const int64_t n = s.ids.size(0) - 1;
    auto emb = teacher.embed.index_select(0, s.ids.narrow(0, 1, n));
    xs.push_back(at::cat({s.hs.narrow(0, 0, n).to(at::kFloat), emb, at::ones({n, 1})}, 1));
    ys.push_back(s.lhs.narrow(0, 1, n).to(at::kFloat));
  }
  auto X = at::cat(xs), Y = at::cat(ys);
  const int64_t train = X.size(0) * 3 / 4, test = X.size(0) - train;
  auto coef = std::get<0>(at::linalg_lstsq(X.narrow(0, 0, train), Y.narrow(0, 0, train)));
  auto pred = at::matmul(X.narrow(0, train, test), coef);
  auto want = at::argmax(at::matmul(Y.narrow(0, train, test), teacher.lm_head.t()), 1);
  auto got = at::argmax(at::matmul(pred, teacher.lm_head.t()), 1);
  const double acc = (got == want).to(at::kFloat).mean().item<double>();
  INFO("top-1 agreement " << acc << " vs chance " << 1.0 / V);
  CHECK(acc > 10.0 / V);
  // The token stream itself is far from uniform given the state: mean p(next) >> 1/V.
  auto s = teacher_sample(teacher, 300, 77);
  auto logp = at::log_softmax(at::matmul(s.lhs.to(at::kFloat), teacher.lm_head.t()), 1);
  auto next = s.ids.narrow(0, 1, 299);
  const double nll = -logp.narrow(0, 0, 299).gather(1, next.unsqueeze(1)).mean().item<double>();
  INFO("teacher NLL " << nll << " vs uniform " << std::log(double(V)));
  CHECK(nll < std::log(double(V)) - 1.0);
}

TEST_CASE("synthesize writes samples, manifest and a loadable target folder", "[data]") {
  TempDir dir("synth");
  eaglet::Config cfg;
  cfg.data.path = dir / "store";
  cfg.parallel.ulysses = 2;
  cfg.parallel.ring = 2;
  cfg.training.ttt_length = 3;
  cfg.data.max_seq_length = 64;
  cfg.model.config.vocab_size = 50;
  cfg.model.config.target_hidden_size = 8;
  SynthOptions opt;
  opt.samples = 6;
  opt.seed = 3;
  opt.full_dir = dir / "full";
  const auto sum = synthesize(cfg, opt);
  CHECK(sum.samples == 6);
  CHECK(sum.longer_than_max >= 1);
  CHECK(sum.not_divisible >= 1);
  CHECK(sum.target_dir == dir / "store/target");
  ManifestReader manifest(sum.manifest, manifest_expect(cfg));
  CHECK(manifest.poll() == 6);
  CHECK(manifest.first_error().empty());
  CHECK(manifest.at(0).entry.key == "synth3_000000");
  CHECK(eaglet::io::is_file(dir / "full/synth3_000005.safetensors"));
  eaglet::io::SafetensorsSet target(sum.target_dir);
  CHECK(target.get("lm_head.weight").sizes() == at::IntArrayRef{50, 8});
  CHECK(target.get("model.embed_tokens.weight").sizes() == at::IntArrayRef{50, 8});
  CHECK(target.get("model.norm.weight").sizes() == at::IntArrayRef{8});
  const auto config = eaglet::test::read_bytes(sum.target_dir + "/config.json");
  CHECK(config.find("\"tie_word_embeddings\": false") != std::string::npos);
  // The same seed gives the same samples for every layout (only the sharding differs).
  eaglet::Config one = cfg;
  one.parallel.ulysses = one.parallel.ring = 1;
  one.data.path = dir / "store1";
  opt.full_dir = dir / "full1";
  synthesize(one, opt);
  ManifestReader m1(manifest_path(one.data), manifest_expect(one));
  REQUIRE(m1.poll() == 6);
  for (int64_t i = 0; i < 6; ++i) {
    CHECK(m1.at(i).entry.seq_len == manifest.at(i).entry.seq_len);
    CHECK(m1.at(i).entry.packed_loss_mask == manifest.at(i).entry.packed_loss_mask);
    const auto key = manifest.at(i).entry.key;
    CHECK(eaglet::test::read_bytes(dir / ("full/" + key + ".safetensors")) ==
          eaglet::test::read_bytes(dir / ("full1/" + key + ".safetensors")));
  }
  // Every shard of every sample is in the store with the manifest's sizes.
  for (int64_t i = 0; i < 6; ++i) {
    const auto& e = manifest.at(i).entry;
    const auto g = shard_geometry(e.seq_len, e.max_seq_length, 4, 3);
    for (int64_t s = 0; s < 4; ++s)
      for (const auto& spec : shard_objects(e, g, s)) {
        DirStore store(cfg.data.path);
        REQUIRE(store.size(spec.key) == spec.bytes);
      }
  }
}

TEST_CASE("read_shard_ids: the ids object in the manifest's dtype (int32, int64), errors name it",
          "[data]") {
  TempDir dir{"ids"};
  DirStore store{dir / "store"};
  const int64_t S = 11, P = 2, T = 2;
  const auto g = shard_geometry(S, S, P, T);
  ManifestEntry e;
  e.key = "k";
  e.seq_len = S;
  e.hidden_size = 4;
  e.sp_size = P;
  e.ttt_length = T;
  e.max_seq_length = S;
  auto want = at::arange(100, 100 + g.local_len, at::TensorOptions().dtype(at::kLong));
  for (auto dtype : {at::kInt, at::kLong}) {
    e.ids_dtype = dtype == at::kInt ? "int32" : "int64";
    auto stored = want.to(dtype).contiguous();
    store.put(object_key("k", 1, ShardObject::ids), stored.data_ptr(),
              stored.numel() * stored.element_size());
    auto ids = read_shard_ids(store, e, g, 1, "vocabulary count");
    CHECK(ids.scalar_type() == at::kLong);
    CHECK(same(ids, want));  // exact: the values, not the bytes, of the stored dtype
  }
  // Stored as int64 but declared int32: a size mismatch naming the key, dtype and both sizes.
  auto err = error_of([&] {
    e.ids_dtype = "int32";
    auto wide = want.contiguous();
    store.put(object_key("k", 1, ShardObject::ids), wide.data_ptr(), wide.numel() * 8);
    (void)read_shard_ids(store, e, g, 1, "vocabulary count");
  });
  CHECK(err.find("vocabulary count: object k_usp1_ids (int32") != std::string::npos);
  CHECK(err.find(std::to_string(g.local_len * 4) + " bytes") != std::string::npos);
  CHECK(error_of([&] {
          (void)read_shard_ids(store, e, g, 0, "vocabulary count");
        }).find("object k_usp0_ids is not in the dir store (consumed by an earlier run with "
                "data.consume=true, or never written)") != std::string::npos);
}

TEST_CASE("first_nonfinite_row finds the first NaN / Inf row by the bits; finite extremes pass",
          "[data]") {
  for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    auto t = at::randn({5, 7}).to(dtype);
    CHECK(first_nonfinite_row(t) == -1);
    // The largest finite values and the smallest subnormals are not flagged.
    t[1][2] = dtype == at::kHalf ? 65504.0 : (dtype == at::kBFloat16 ? 3.3895e38 : 3.4028e38);
    t[2][3] = -1e-40;
    CHECK(first_nonfinite_row(t) == -1);
    for (double bad : {std::nan(""), HUGE_VAL, -HUGE_VAL}) {
      auto u = t.clone();
      u[4][6] = bad;
      u[3][0] = bad;
      CHECK(first_nonfinite_row(u) == 3);
    }
  }
  CHECK(first_nonfinite_row(at::zeros({0, 4}, at::kBFloat16)) == -1);
  CHECK(error_of([] {
          first_nonfinite_row(at::zeros({3}, at::kLong));
        }).find("is not a float tensor") != std::string::npos);
}
