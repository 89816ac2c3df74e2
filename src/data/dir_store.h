// The embedded `dir` store backend: one file per object under a folder (data.path), named by its
// key. Writes go to a hidden temporary file, are fsynced and renamed into place (then the folder is
// fsynced), so a reader sees either the whole old value, the whole new one, or none.
#pragma once

#include <atomic>
#include <string>

#include "data/store.h"

namespace eaglet::data {

// Thread-safe: no state besides the folder; concurrent readers and writers of different keys
// (and of the same key, by the rename) are fine.
class DirStore final : public Store {
 public:
  // Creates the folder when missing; throws eaglet::Error naming it when that fails.
  explicit DirStore(std::string folder);

  const char* backend() const override { return "dir"; }
  const std::string& folder() const { return folder_; }
  std::string path_of(const std::string& key) const;  // the object's file (key checked)

  int64_t size(const std::string& key) override;
  std::vector<int64_t> batch_get_into(const std::vector<std::string>& keys,
                                      const std::vector<void*>& buffers,
                                      const std::vector<int64_t>& capacities) override;
  void put(const std::string& key, const void* data, int64_t bytes) override;
  void remove(const std::string& key) override;

 private:
  std::string folder_;
  std::atomic<int64_t> tmp_counter_{0};
};

}  // namespace eaglet::data
