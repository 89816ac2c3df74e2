// Rank layout of DESIGN §1: world rank -> (dp, sp, ulysses, ring) and the members of each group.
// Pure arithmetic, no communication: every rank computes the same groups in the same order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace eaglet {

// The process grid: W ranks = D data-parallel replicas × P = U·R sequence-parallel ranks.
struct Layout {
  int64_t world = 1;
  int64_t ulysses = 1;                           // U
  int64_t ring = 1;                              // R
  int64_t sp() const { return ulysses * ring; }  // P
  int64_t dp() const { return world / sp(); }    // D
};

// Coordinates of one world rank; a distinct type so they are never confused with the world rank.
struct RankCoord {
  int64_t dp = 0;       // replica index, r / P
  int64_t sp = 0;       // rank in the SP group, r % P
  int64_t ulysses = 0;  // s % U (fastest)
  int64_t ring = 0;     // s / U
  bool operator==(const RankCoord&) const = default;
};

// The groups, in the fixed order in which every rank creates their communicators.
enum class GroupKind { world, dp, sp, ulysses, ring };
inline constexpr GroupKind kAllGroupKinds[] = {GroupKind::world, GroupKind::dp, GroupKind::sp,
                                               GroupKind::ulysses, GroupKind::ring};
const char* group_name(GroupKind kind);

// Throws eaglet::Error unless world % (U·R) == 0 and U, R >= 1.
void check_layout(const Layout& layout);

RankCoord coord_of(const Layout& layout, int64_t world_rank);
int64_t world_rank_of(const Layout& layout, const RankCoord& coord);

// Members (world ranks) of `kind`'s group that holds `world_rank`, ordered by rank in the group.
std::vector<int64_t> group_members(const Layout& layout, GroupKind kind, int64_t world_rank);
// Index of that group among the groups of this kind (the colour of an MPI split).
int64_t group_index(const Layout& layout, GroupKind kind, int64_t world_rank);
// This rank's position inside that group.
int64_t rank_in_group(const Layout& layout, GroupKind kind, int64_t world_rank);
// Every group of this kind, ordered by group_index.
std::vector<std::vector<int64_t>> all_groups(const Layout& layout, GroupKind kind);

// Human-readable table of every group (what `eaglet topo` prints).
std::string describe(const Layout& layout);

}  // namespace eaglet
