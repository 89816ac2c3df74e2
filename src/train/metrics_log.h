// <output_dir>/metrics.jsonl (DESIGN §6): one JSON object per optimizer step (and per evaluation,
// with "eval": true), appended by world rank 0 and flushed per line.
//  - Opening for a run that starts after step N (resume; N = 0 from scratch) first keeps only
//    the whole, valid lines of steps <= N: a line torn by a crash or a full disk, and the lines of
//    steps the resumed run will redo, are removed (the file is rewritten through a rename), so
//    every step appears once.
//  - A failed write (disk full, I/O error) is logged once when it happens and remembered;
//    check(), called before each checkpoint, then fails the run naming the file and the error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <string>

namespace eaglet::train {

class MetricsLog {
 public:
  MetricsLog(std::string path, int64_t keep_through_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& line);
  // Flushes and fsyncs; throws eaglet::Error naming the file when any write so far failed.
  void check();
  const std::string& path() const { return path_; }

 private:
  void fail(const std::string& what);
  std::string path_;
  std::FILE* file_ = nullptr;
  std::string failure_;  // the first failed write
};

}  // namespace eaglet::train
