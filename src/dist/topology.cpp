// Closed-form group membership; tests check it against a brute-force enumeration.
#include "dist/topology.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"

namespace eaglet {

const char* group_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::world:
      return "world";
    case GroupKind::dp:
      return "dp";
    case GroupKind::sp:
      return "sp";
    case GroupKind::ulysses:
      return "ulysses";
    case GroupKind::ring:
      return "ring";
  }
  return "?";
}

void check_layout(const Layout& l) {
  EAGLET_CHECK(l.ulysses >= 1 && l.ring >= 1,
               "parallel.ulysses={} parallel.ring={}: both must be >= 1", l.ulysses, l.ring);
  EAGLET_CHECK(l.world >= 1 && l.world % l.sp() == 0,
               "world size {} is not divisible by parallel.ulysses*parallel.ring = {}*{} = {}",
               l.world, l.ulysses, l.ring, l.sp());
}

RankCoord coord_of(const Layout& l, int64_t r) {
  EAGLET_CHECK(r >= 0 && r < l.world, "rank {} outside world of {}", r, l.world);
  RankCoord c;
  c.dp = r / l.sp();
  c.sp = r % l.sp();
  c.ulysses = c.sp % l.ulysses;
  c.ring = c.sp / l.ulysses;
  return c;
}

int64_t world_rank_of(const Layout& l, const RankCoord& c) {
  return c.dp * l.sp() + c.ring * l.ulysses + c.ulysses;
}

std::vector<int64_t> group_members(const Layout& l, GroupKind kind, int64_t r) {
  RankCoord c = coord_of(l, r);
  std::vector<int64_t> out;
  switch (kind) {
    case GroupKind::world:
      for (int64_t i = 0; i < l.world; ++i) out.push_back(i);
      break;
    case GroupKind::dp:
      for (int64_t d = 0; d < l.dp(); ++d) out.push_back(d * l.sp() + c.sp);
      break;
    case GroupKind::sp:
      for (int64_t s = 0; s < l.sp(); ++s) out.push_back(c.dp * l.sp() + s);
      break;
    case GroupKind::ulysses:
      for (int64_t u = 0; u < l.ulysses; ++u) out.push_back(world_rank_of(l, {c.dp, 0, u, c.ring}));
      break;
    case GroupKind::ring:
      for (int64_t g = 0; g < l.ring; ++g) out.push_back(world_rank_of(l, {c.dp, 0, c.ulysses, g}));
      break;
  }
  return out;
}

int64_t group_index(const Layout& l, GroupKind kind, int64_t r) {
  RankCoord c = coord_of(l, r);
  switch (kind) {
    case GroupKind::world:
      return 0;
    case GroupKind::dp:
      return c.sp;
    case GroupKind::sp:
      return c.dp;
    case GroupKind::ulysses:
      return c.dp * l.ring + c.ring;
    case GroupKind::ring:
      return c.dp * l.ulysses + c.ulysses;
  }
  return 0;
}

int64_t rank_in_group(const Layout& l, GroupKind kind, int64_t r) {
  RankCoord c = coord_of(l, r);
  switch (kind) {
    case GroupKind::world:
      return r;
    case GroupKind::dp:
      return c.dp;
    case GroupKind::sp:
      return c.sp;
    case GroupKind::ulysses:
      return c.ulysses;
    case GroupKind::ring:
      return c.ring;
  }
  return 0;
}

std::vector<std::vector<int64_t>> all_groups(const Layout& l, GroupKind kind) {
  std::vector<std::vector<int64_t>> groups;
  for (int64_t r = 0; r < l.world; ++r) {
    auto idx = static_cast<size_t>(group_index(l, kind, r));
    if (idx >= groups.size()) groups.resize(idx + 1);
    if (groups[idx].empty()) groups[idx] = group_members(l, kind, r);
  }
  return groups;
}

std::string describe(const Layout& l) {
  std::string out = fmt::format("layout: W={} = D {} x P {} (U {} x R {})\n", l.world, l.dp(),
                                l.sp(), l.ulysses, l.ring);
  out += "rank -> (dp, sp, ulysses, ring):";
  for (int64_t r = 0; r < l.world; ++r) {
    auto c = coord_of(l, r);
    out += fmt::format(" {}->({},{},{},{})", r, c.dp, c.sp, c.ulysses, c.ring);
  }
  out += "\n";
  for (GroupKind kind : kAllGroupKinds) {
    if (kind == GroupKind::world) continue;
    out += fmt::format("{:8} groups:", group_name(kind));
    for (const auto& g : all_groups(l, kind)) out += fmt::format(" [{}]", fmt::join(g, " "));
    out += "\n";
  }
  return out;
}

}  // namespace eaglet
