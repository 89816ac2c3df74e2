// What the collectives moved, for the bench's time split (DESIGN §8): calls, bytes and time of
// each kind of collective (the Ulysses all-to-alls, the ring's send/recv hops, the all-reduces of
// the gradient sync and the loss counts), with the bus bandwidth those give (nccl-tests'
// definition: algorithm bandwidth bytes / time, times 2(n−1)/n for an all-reduce, (n−1)/n for an
// all-to-all, 1 for a send/recv). Off, the counting is one relaxed load per call. Timed, every
// counted collective waits for the device before and after itself, so its time is its own (the
// overlap the step has is given up): the bench turns timing on for its one split step only.
// Counts this process's calls on groups of more than one member.
#pragma once

#include <array>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "dist/communicator.h"

namespace eaglet {

enum class Collective { all_to_all, send_recv, all_reduce, broadcast };
inline constexpr std::array<Collective, 4> kAllCollectives{
    Collective::all_to_all, Collective::send_recv, Collective::all_reduce, Collective::broadcast};
const char* collective_name(Collective c);

struct CollectiveCount {
  Collective kind = Collective::all_to_all;
  int64_t calls = 0;
  double bytes = 0;     // this rank's payload: the tensor of an all-to-all's input or an
                        // all-reduce, a send/recv's send
  double ms = 0;        // only when timed
  int64_t members = 0;  // the group size of the last call (bus bandwidth's n)
  double bus_gb_per_s() const;
};
using CollectiveCounts = std::array<CollectiveCount, kAllCollectives.size()>;

namespace collectives {
// Starts counting (zeroed); `timed` on `device`: each call is timed as described above.
void start(bool timed, c10::Device device);
// Stops and returns what was counted since start().
CollectiveCounts stop();
// "all_to_all 14 x 12.6 MB 1.21 ms (bus 94.1 GB/s); ..." (the size per call, the time of all
// calls; kinds with no call left out; "none").
std::string text(const CollectiveCounts& counts);
}  // namespace collectives

// `inner`, counted (process_groups.cpp wraps every device group).
std::shared_ptr<Communicator> counted(std::shared_ptr<Communicator> inner);

}  // namespace eaglet
