// The progress watchdog (runtime.timeout_s): a hung peer becomes an error, never a hang.
//
// Progress is any mark of this rank's position: the training loop entering a phase (watch::phase),
// or any communicator operation starting or finishing (every group's communicator is wrapped by
// watched(), so each collective, send/recv wait and barrier is recorded with its group). A
// background thread checks once a second:
//  - NCCL's asynchronous errors (Communicator::async_error), as c10d's watchdog does;
//  - the time since the last mark: above the timeout (or a phase's own larger allowance: a data
//    wait bounded by data.manifest_wait_s), the rank is stuck.
// Then it logs, as an error every rank prints, where it waits (step, phase, micro-batch, the
// collective and its group with the group's world ranks, for how long), waits kGrace so that the
// other live ranks, stuck since about the same moment, log theirs too, aborts the communicators
// (ncclCommAbort releases kernels spinning on a dead peer) and ends the job with MPI_Abort(1)
// (a last-resort _exit(1) follows if MPI_Abort does not return the process to the launcher).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dist/communicator.h"

namespace eaglet {

class MpiEnv;
class ProcessGroups;

namespace watch {

// Where the main loop is. `what` must be a string literal (it is kept by pointer); step and micro
// are -1 when they do not apply. allow_s > 0 lets this phase stay silent that long (at least the
// timeout): for waits with their own, longer bound.
void phase(const char* what, int64_t step = -1, int64_t micro = -1, int64_t allow_s = 0);

// A communicator that records each operation of `inner` (group `group`, a string literal) for the
// watchdog; otherwise forwards everything.
std::shared_ptr<Communicator> watched(std::shared_ptr<Communicator> inner, const char* group);

}  // namespace watch

class Watchdog {
 public:
  static constexpr std::chrono::seconds kGrace{10};

  // timeout 0: off (no thread). `groups` must outlive the watchdog.
  Watchdog(const MpiEnv& env, ProcessGroups& groups, std::chrono::seconds timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // What this rank waits on now, as the report prints it (for tests and error messages).
  static std::string where();

 private:
  void run();
  [[noreturn]] void fire(const std::string& why);

  const MpiEnv& env_;
  ProcessGroups& groups_;
  std::chrono::seconds timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace eaglet
