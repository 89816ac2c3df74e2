// The exclusive lock of an output folder for the whole of a run: <output_dir>/eaglet.lock, created
// atomically (O_EXCL) by world rank 0 with the holder's host, PID, start time and command, removed
// when the run ends. A second run on the folder fails naming the holder; a lock whose holder was a
// process on this host that no longer exists (killed, aborted) is taken over with a warning. A
// lock from another host is never taken over (its process cannot be checked from here).
#pragma once

#include <string>

namespace eaglet::io {

class RunLock {
 public:
  // Throws eaglet::Error naming the folder, the holder and what to do.
  RunLock(const std::string& dir, const std::string& command);
  ~RunLock();  // removes the lock file (if it is still ours)
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_, mine_;
};

}  // namespace eaglet::io
