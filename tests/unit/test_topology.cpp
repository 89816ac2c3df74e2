// Rank layout (DESIGN §1) against a brute-force enumeration that applies the definitions
// literally: groups are the sets of ranks sharing the named coordinates.
#include <map>
#include <set>
#include <tuple>

#include "catch.h"
#include "core/error.h"
#include "dist/topology.h"

using namespace eaglet;

namespace {

// The definition, written independently: dp = r / P, s = r % P, u = s % U, g = s / U.
std::tuple<int64_t, int64_t, int64_t, int64_t> brute_coord(int64_t r, int64_t U, int64_t R) {
  int64_t P = U * R;
  return {r / P, r % P, (r % P) % U, (r % P) / U};
}

// Members of the group of `r`: every rank whose `key` coordinates equal r's, ordered by the
// coordinate that varies inside the group.
std::vector<int64_t> brute_group(const Layout& l, GroupKind kind, int64_t r) {
  auto key = [&](int64_t x) -> std::vector<int64_t> {
    auto [dp, s, u, g] = brute_coord(x, l.ulysses, l.ring);
    switch (kind) {
      case GroupKind::world:
        return {};
      case GroupKind::dp:
        return {s};
      case GroupKind::sp:
        return {dp};
      case GroupKind::ulysses:
        return {dp, g};
      case GroupKind::ring:
        return {dp, u};
    }
    return {};
  };
  auto order = [&](int64_t x) -> int64_t {
    auto [dp, s, u, g] = brute_coord(x, l.ulysses, l.ring);
    switch (kind) {
      case GroupKind::world:
        return x;
      case GroupKind::dp:
        return dp;
      case GroupKind::sp:
        return s;
      case GroupKind::ulysses:
        return u;
      case GroupKind::ring:
        return g;
    }
    return 0;
  };
  std::map<int64_t, int64_t> by_order;
  for (int64_t x = 0; x < l.world; ++x)
    if (key(x) == key(r)) by_order[order(x)] = x;
  std::vector<int64_t> out;
  for (auto& [o, x] : by_order) out.push_back(x);
  return out;
}

}  // namespace

TEST_CASE("rank layout matches brute force for many (W, U, R)", "[topology]") {
  int combos = 0;
  for (int64_t U = 1; U <= 8; ++U)
    for (int64_t R = 1; R <= 8; ++R)
      for (int64_t D = 1; D <= 4; ++D) {
        Layout l{U * R * D, U, R};
        REQUIRE_NOTHROW(check_layout(l));
        REQUIRE(l.dp() == D);
        ++combos;
        for (GroupKind kind : kAllGroupKinds) {
          std::set<int64_t> covered;
          auto groups = all_groups(l, kind);
          for (int64_t r = 0; r < l.world; ++r) {
            auto c = coord_of(l, r);
            auto [dp, s, u, g] = brute_coord(r, U, R);
            REQUIRE(c == RankCoord{dp, s, u, g});
            REQUIRE(world_rank_of(l, c) == r);
            auto members = group_members(l, kind, r);
            REQUIRE(members == brute_group(l, kind, r));
            REQUIRE(members[rank_in_group(l, kind, r)] == r);
            REQUIRE(groups.at(group_index(l, kind, r)) == members);
            covered.insert(members.begin(), members.end());
          }
          // The groups of one kind partition the world, with the sizes DESIGN §1 gives.
          REQUIRE(static_cast<int64_t>(covered.size()) == l.world);
          size_t expected_size = kind == GroupKind::world     ? l.world
                                 : kind == GroupKind::dp      ? D
                                 : kind == GroupKind::sp      ? U * R
                                 : kind == GroupKind::ulysses ? U
                                                              : R;
          for (const auto& grp : groups) REQUIRE(grp.size() == expected_size);
        }
      }
  REQUIRE(combos == 256);
}

TEST_CASE("known layout W=8, U=2, R=2", "[topology]") {
  Layout l{8, 2, 2};
  // rank 7: dp 1, s 3, u 1, g 1
  REQUIRE(coord_of(l, 7) == RankCoord{1, 3, 1, 1});
  REQUIRE(group_members(l, GroupKind::ulysses, 7) == std::vector<int64_t>{6, 7});
  REQUIRE(group_members(l, GroupKind::ring, 7) == std::vector<int64_t>{5, 7});
  REQUIRE(group_members(l, GroupKind::sp, 7) == std::vector<int64_t>{4, 5, 6, 7});
  REQUIRE(group_members(l, GroupKind::dp, 7) == std::vector<int64_t>{3, 7});
}

TEST_CASE("layouts that do not divide the world are rejected", "[topology]") {
  REQUIRE_THROWS_AS(check_layout(Layout{6, 2, 2}), Error);
  REQUIRE_THROWS_AS(check_layout(Layout{4, 0, 1}), Error);
  REQUIRE_THROWS_AS(coord_of(Layout{4, 2, 2}, 4), Error);
}
