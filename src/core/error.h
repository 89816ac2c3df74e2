// The one error type of eaglet: what failed, where (file:line) and on which rank.
// Library code throws it (through the EAGLET_* macros); main() catches it, logs it, aborts the
// communicators and exits non-zero. No exit() or abort() anywhere else.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace eaglet {

// The rank this process reports in errors and logs; -1 until the distributed runtime knows it.
void set_error_rank(int rank);
int error_rank();

class Error : public std::runtime_error {
 public:
  Error(std::string what, const char* file, int line);
  const std::string& message() const { return message_; }  // the bare "what", no location
  const std::string& where() const { return where_; }      // "file:line"
  int rank() const { return rank_; }
  // True when every rank raised this same error together (start-up checks agreed over MPI):
  // main() then exits cleanly with a non-zero code instead of aborting the job.
  bool all_ranks() const { return all_ranks_; }
  void set_all_ranks() { all_ranks_ = true; }

 private:
  std::string message_;
  std::string where_;
  int rank_;
  bool all_ranks_ = false;
};

// A store outage (a Mooncake master or transport failure: connection refused, RPC error, time-out),
// raised once the backend's bounded retries are spent. It is not bad data: the shard reader never
// neutralises it under data.on_error=skip, so the run ends (exit 1 on every rank).
class StoreUnavailable : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_error(const char* file, int line, std::string what);

}  // namespace eaglet

// EAGLET_FAIL("bad value {} for {}", v, key): throws eaglet::Error with file:line and rank.
#define EAGLET_FAIL(...) ::eaglet::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

// EAGLET_CHECK(cond, "message {}", x): throws when cond is false; the message says what to do.
#define EAGLET_CHECK(cond, ...)                                                         \
  do {                                                                                  \
    if (!(cond)) ::eaglet::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)
