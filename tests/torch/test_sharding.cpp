// Sharding maths of DESIGN §2-3 against a brute-force enumeration: C, local_len, the rows of each
// shard (own rows, halo, tail padding), lengths not divisible by P, L > max_seq_length, the
// rebuilt masks and positions for many (S, P, T, U), and the packed loss mask codec.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <random>

#include "catch.h"
#include "data/sharding.h"
#include "test_files.h"

using namespace eaglet::data;
using eaglet::test::error_of;

namespace {

// C by search: the smallest c with c·P >= L.
int64_t brute_chunk(int64_t L, int64_t P) {
  int64_t c = 0;
  while (c * P < L) ++c;
  return c;
}

// A full sample whose every value encodes its row (row + 1, so padding zeros are distinct).
FullSample row_coded_sample(int64_t S, int64_t ht) {
  auto rows = at::arange(1, S + 1, at::TensorOptions().dtype(at::kLong));
  FullSample s;
  s.ids = rows.clone();
  s.hs = rows.unsqueeze(1).repeat({1, 3 * ht}).to(at::kFloat);
  s.lhs = (rows.unsqueeze(1).repeat({1, ht}) * 10).to(at::kFloat);
  s.loss_mask = at::zeros({S}, at::kLong);
  return s;
}

std::vector<uint8_t> random_mask(std::mt19937_64& rng, int64_t n) {
  std::vector<uint8_t> m(static_cast<size_t>(n));
  const int kind = static_cast<int>(rng() % 4);
  for (auto& v : m) v = kind == 0 ? 0 : kind == 1 ? 1 : static_cast<uint8_t>(rng() % 2);
  return m;
}

}  // namespace

TEST_CASE("shard geometry matches a brute-force enumeration", "[data]") {
  int64_t cases = 0;
  for (int64_t P : {1, 2, 3, 4, 8})
    for (int64_t T : {0, 1, 3, 7})
      for (int64_t max_len : {5, 16, 33})
        for (int64_t S = 1; S <= 40; ++S) {
          const auto g = shard_geometry(S, max_len, P, T);
          INFO("S=" << S << " max=" << max_len << " P=" << P << " T=" << T);
          const int64_t L = std::min(S, max_len);
          REQUIRE(g.length == L);
          REQUIRE(g.chunk == brute_chunk(L, P));
          REQUIRE(g.local_len == g.chunk + T);
          // Brute force: row r of the sample sits at local row r - s·C of shard s when
          // 0 <= r - s·C < local_len; only rows < L exist.
          std::vector<int64_t> owner_count(static_cast<size_t>(L), 0);
          for (int64_t s = 0; s < P; ++s) {
            const auto rows = g.rows(s), own = g.own_rows(s);
            int64_t real = 0;
            bool seen_padding = false;
            for (int64_t i = 0; i < g.local_len; ++i) {
              const int64_t r = s * g.chunk + i;
              const bool exists = r < L;
              if (exists) {
                REQUIRE(!seen_padding);  // padding only at the global tail, never in the middle
                ++real;
                if (i < g.chunk) ++owner_count[static_cast<size_t>(r)];
              } else {
                seen_padding = true;
              }
            }
            REQUIRE(rows.size() == real);
            if (real > 0) REQUIRE(rows.begin == s * g.chunk);
            REQUIRE(own.size() == std::max<int64_t>(0, std::min(g.chunk, L - s * g.chunk)));
          }
          for (int64_t c : owner_count) REQUIRE(c == 1);  // own rows partition [0, L)
          ++cases;
        }
  CHECK(cases == 5 * 4 * 3 * 40);
}

TEST_CASE("shard geometry refuses impossible inputs", "[data]") {
  CHECK(error_of([] { shard_geometry(0, 16, 2, 3); }).find("seq_len >= 1") != std::string::npos);
  CHECK(error_of([] { shard_geometry(10, 16, 0, 3); }).find("sp_size >= 1") != std::string::npos);
}

TEST_CASE("slice_shard equals the row-by-row reference and the brute-force rows", "[data]") {
  const int64_t ht = 2;
  for (int64_t P : {1, 2, 3, 4})
    for (int64_t T : {0, 1, 3})
      for (int64_t S : {1, 2, 5, 7, 8, 13, 24, 31}) {
        const int64_t max_len = 20;  // S > max_len cuts
        const auto sample = row_coded_sample(S, ht);
        const auto g = shard_geometry(S, max_len, P, T);
        for (int64_t s = 0; s < P; ++s) {
          INFO("S=" << S << " P=" << P << " T=" << T << " s=" << s);
          const auto fast = slice_shard(sample, g, s), ref = reference_shard(sample, g, s);
          REQUIRE(at::equal(fast.hs, ref.hs));
          REQUIRE(at::equal(fast.ids, ref.ids));
          REQUIRE(at::equal(fast.lhs, ref.lhs));
          REQUIRE(fast.ids.size(0) == g.local_len);
          REQUIRE(fast.hs.size(1) == 3 * ht);
          for (int64_t i = 0; i < g.local_len; ++i) {
            const int64_t r = s * g.chunk + i;
            const int64_t want = r < g.length ? r + 1 : 0;  // zero past L (tail padding)
            REQUIRE(fast.ids[i].item<int64_t>() == want);
            REQUIRE(fast.lhs[i][1].item<float>() == static_cast<float>(want * 10));
            // The halo: local rows C..C+T-1 are the first T rows of shard s+1.
            if (i >= g.chunk && s + 1 < P && i - g.chunk < g.chunk)
              REQUIRE(want == (r < g.length ? (s + 1) * g.chunk + (i - g.chunk) + 1 : 0));
          }
        }
      }
}

TEST_CASE("rebuilt loss mask, attention mask and positions match brute force", "[data]") {
  std::mt19937_64 rng(7);
  for (int64_t U : {1, 2, 4})
    for (int64_t R : {1, 2, 3})
      for (int64_t T : {1, 3, 7})
        for (int trial = 0; trial < 12; ++trial) {
          const int64_t P = U * R, max_len = 9 + static_cast<int64_t>(rng() % 60);
          const int64_t S = 1 + static_cast<int64_t>(rng() % 80);
          // Mask lengths shorter than, equal to and longer than L.
          const int64_t mask_len = static_cast<int64_t>(rng() % (S + 1));
          const auto mask = random_mask(rng, mask_len);
          const auto g = shard_geometry(S, max_len, P, T);
          int64_t total = 0, want_total = 0;
          for (int64_t r = 0; r < std::min<int64_t>(g.length, mask_len); ++r) want_total += mask[r];
          for (int64_t s = 0; s < P; ++s) {
            INFO("S=" << S << " max=" << max_len << " U=" << U << " R=" << R << " T=" << T
                      << " s=" << s << " mask_len=" << mask_len);
            const auto lm = shard_loss_mask(mask, g, s);
            const auto am = shard_attention_mask(g, s);
            REQUIRE(lm.size(0) == g.local_len);
            REQUIRE(lm.scalar_type() == at::kFloat);
            for (int64_t i = 0; i < g.local_len; ++i) {
              const int64_t r = s * g.chunk + i;
              const float m = (r < g.length && r < mask_len) ? mask[r] : 0;
              REQUIRE(lm[i].item<float>() == m);
              REQUIRE(am[i].item<int64_t>() == (r < g.length ? 1 : 0));
            }
            total += own_loss_tokens(mask, g, s);
            // Positions: the Ulysses-gathered chunk of ring rank g = s / U is the own rows of SP
            // ranks g·U .. g·U + U - 1, concatenated.
            const int64_t ring = s / U;
            const auto pos = ring_chunk_positions(g, U, ring);
            REQUIRE(pos.size(0) == g.chunk * U);
            for (int64_t u = 0; u < U; ++u)
              for (int64_t i = 0; i < g.chunk; ++i)
                REQUIRE(pos[u * g.chunk + i].item<int64_t>() == (ring * U + u) * g.chunk + i);
          }
          REQUIRE(total == want_total);
        }
}

TEST_CASE("packed loss mask: documented example and round trips", "[data]") {
  CHECK(unpack_loss_mask("2,3,2,2,1") == std::vector<uint8_t>{0, 0, 1, 1, 1, 0, 0, 1, 1, 0});
  CHECK(unpack_loss_mask("0,3") == std::vector<uint8_t>{1, 1, 1});
  CHECK(unpack_loss_mask("4") == std::vector<uint8_t>{0, 0, 0, 0});
  CHECK(unpack_loss_mask("0") == std::vector<uint8_t>{});
  CHECK(pack_loss_mask(std::vector<uint8_t>{0, 0, 1, 1, 1, 0, 0, 1, 1, 0}) == "2,3,2,2,1");
  CHECK(pack_loss_mask(std::vector<uint8_t>{1, 1, 0}) == "0,2,1");
  CHECK(pack_loss_mask(std::vector<uint8_t>{}) == "0");
  CHECK(pack_loss_mask(std::vector<uint8_t>{0, 5, 7}) == "1,2");  // nonzero = 1
  const auto info = check_packed_loss_mask("2,3,2,2,1");
  CHECK(info.length == 10);
  CHECK(info.ones == 5);
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const auto m = random_mask(rng, static_cast<int64_t>(rng() % 50));
    const auto packed = pack_loss_mask(m);
    INFO(packed);
    REQUIRE(unpack_loss_mask(packed) == m);
    auto t = at::zeros({static_cast<int64_t>(m.size())}, at::kFloat);
    for (size_t i = 0; i < m.size(); ++i) t[static_cast<int64_t>(i)] = m[i] * 1.0;
    REQUIRE(pack_loss_mask(t) == packed);
  }
}

TEST_CASE("packed loss mask errors quote the text and name the run", "[data]") {
  auto err = [](const std::string& p) { return error_of([&] { unpack_loss_mask(p); }); };
  CHECK(err("").find("packed_loss_mask is empty") != std::string::npos);
  CHECK(err("2,,3").find("packed_loss_mask \"2,,3\": run 2 '' is not a non-negative decimal "
                         "integer") != std::string::npos);
  CHECK(err("2,x").find("run 2 'x' is not a non-negative decimal integer") != std::string::npos);
  CHECK(err("-1").find("run 1 '-1' is not") != std::string::npos);
  CHECK(err(" 2").find("run 1 ' 2' is not") != std::string::npos);
  CHECK(err("2,3,").find("run 3 '' is not") != std::string::npos);
  CHECK(err("2,0,1").find("run 2 is 0 (only the first run, a 0-run, may be empty)") !=
        std::string::npos);
  CHECK(err("99999999999999").find("is not a non-negative decimal integer") != std::string::npos);
  CHECK(err("2,3").empty());
}

TEST_CASE("object keys follow {key}_usp{s}_{hs,ids,lhs}", "[data]") {
  CHECK(object_key("abc_1", 0, ShardObject::hs) == "abc_1_usp0_hs");
  CHECK(object_key("abc_1", 3, ShardObject::ids) == "abc_1_usp3_ids");
  CHECK(object_key("k", 12, ShardObject::lhs) == "k_usp12_lhs");
}

// A packed sample (DESIGN §6) rebuilt by each rank: hand-worked layouts with row-coded values
// (row r holds r + 1; 0 is a zero row), so every run, halo row, position and segment is checked.
namespace {
struct PackedCase {
  int64_t L, P, T;
  std::vector<int64_t> docs;
  std::vector<std::vector<int64_t>> ids, runs;  // per SP rank
  std::vector<int64_t> positions, segments;
};
}  // namespace

TEST_CASE("pack_documents: runs, halos cut at document ends, positions and segments", "[data]") {
  const std::vector<PackedCase> cases = {
      // L 10, documents 3 | 4 | 3, P 2 (C 5), T 2: rank 0 owns rows 0-4, cut after row 2; its
      // second piece (rows 3, 4) continues into rows 5, 6 of the same document.
      {10, 2, 2, {3, 4, 3},
       {{1, 2, 3, 0, 0, 4, 5, 6, 7}, {6, 7, 0, 0, 8, 9, 10, 0, 0}},
       {{3, 2}, {2, 3}},
       {0, 1, 2, 0, 1, 2, 3, 0, 1, 2},
       {3, 4, 3}},
      // L 8, documents 4 | 4, P 3 (C 3, one padding row), T 1: rank 0 unchanged (its halo, row
      // 3, is still document 0); the last document's end (L) is no cut: the padding row follows
      // it as stored, and continues its positions.
      {8, 3, 1, {4, 4},
       {{1, 2, 3, 4}, {4, 0, 5, 6, 7}, {7, 8, 0, 0}},
       {{3}, {1, 2}, {3}},
       {0, 1, 2, 3, 0, 1, 2, 3, 4},
       {4, 5}},
      // One document: the unpacked layout.
      {7, 2, 2, {7}, {{1, 2, 3, 4, 5, 6}, {5, 6, 7, 0, 0, 0}}, {{4}, {4}},
       {0, 1, 2, 3, 4, 5, 6, 7}, {8}},
  };
  for (const auto& c : cases) {
    const auto g = shard_geometry(c.L, c.L, c.P, c.T);
    const auto full = row_coded_sample(c.L, 2);
    for (int64_t s = 0; s < c.P; ++s) {
      CAPTURE(c.L, c.P, c.T, s);
      auto t = slice_shard(full, g, s);
      ShardInput in{t.hs, t.ids, t.lhs, (t.ids > 0).to(at::kFloat),
                    ring_chunk_positions(g, c.P, 0)};
      pack_documents(in, c.docs, g, s);
      const auto& want = c.ids[static_cast<size_t>(s)];
      const auto n = static_cast<int64_t>(want.size());
      auto want_ids = at::tensor(want, at::TensorOptions().dtype(at::kLong));
      CHECK(in.runs == c.runs[static_cast<size_t>(s)]);
      CHECK(in.segments == c.segments);
      REQUIRE(in.ids.size(0) == n);
      CHECK(at::equal(in.ids, want_ids));
      CHECK(at::equal(in.hs, want_ids.unsqueeze(1).repeat({1, 6}).to(at::kFloat)));
      CHECK(at::equal(in.lhs, (want_ids.unsqueeze(1).repeat({1, 2}) * 10).to(at::kFloat)));
      CHECK(at::equal(in.loss_mask, (want_ids > 0).to(at::kFloat)));
      CHECK(at::equal(in.positions, at::tensor(c.positions, at::TensorOptions().dtype(at::kLong))));
    }
  }
}

TEST_CASE("check_segments names what is wrong", "[data]") {
  CHECK_NOTHROW(check_segments({3, 4}, 7));
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  CHECK(has(error_of([] { check_segments({3, 4}, 8); }),
            "segments: the 2 document lengths sum to 7, seq_len is 8"));
  CHECK(has(error_of([] { check_segments({3, 0, 5}, 8); }),
            "segments: document 1 has length 0, expected >= 1"));
  CHECK(has(error_of([] { check_segments({}, 8); }), "segments: no document lengths"));
}
