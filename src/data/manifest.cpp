// Manifest lines: JSON format, validation with messages naming file:line, append writer, and the
// polling reader.
#include "data/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "data/sharding.h"
#include "data/store.h"
#include "io/files.h"

namespace eaglet::data {
namespace {

constexpr DtypeInfo kDtypes[] = {
    {"bfloat16", 2, true}, {"float16", 2, true}, {"float32", 4, true},
    {"int64", 8, false},   {"int32", 4, false},
};

// Largest sizes accepted: far beyond any real sample, small enough that byte counts never
// overflow int64.
constexpr int64_t kMaxSeqLen = int64_t{1} << 31;
constexpr int64_t kMaxHidden = int64_t{1} << 20;

std::string type_of(const nlohmann::json& v) {
  return v.is_number_integer() ? "integer" : v.type_name();
}

}  // namespace

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string manifest_line(const ManifestEntry& e) {
  nlohmann::ordered_json j;
  j["key"] = e.key;
  j["seq_len"] = e.seq_len;
  j["hidden_size"] = e.hidden_size;
  j["num_aux"] = e.num_aux;
  j["packed_loss_mask"] = e.packed_loss_mask;
  j["sp_size"] = e.sp_size;
  j["ttt_length"] = e.ttt_length;
  j["max_seq_length"] = e.max_seq_length;
  j["dtypes"] = {{"hs", e.hs_dtype}, {"ids", e.ids_dtype}, {"lhs", e.lhs_dtype}};
  if (!e.aux_layer_ids.empty()) j["aux_layer_ids"] = e.aux_layer_ids;
  if (!e.usp_sharded) j["usp_sharded"] = false;
  if (!e.segments.empty()) j["segments"] = e.segments;
  return j.dump();
}

ManifestExpect manifest_expect(const Config& cfg) {
  return {cfg.parallel.ulysses * cfg.parallel.ring, cfg.training.ttt_length,
          cfg.data.max_seq_length, cfg.model.config.target_hidden_size,
          cfg.model.config.num_aux_hidden_states, cfg.parallel.ring};
}

std::string manifest_path(const DataConfig& cfg) {
  return cfg.manifest.empty() ? io::join_path(cfg.path, "manifest.jsonl") : cfg.manifest;
}

ManifestEntry parse_manifest_line(const std::string& text, const ManifestExpect& expect,
                                  const std::string& path, int64_t line) {
  const std::string where = fmt::format("manifest {}:{}", path, line);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    EAGLET_FAIL("{}: not valid JSON: {}", where, e.what());
  }
  EAGLET_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());

  auto field = [&](const char* name) -> const nlohmann::json& {
    EAGLET_CHECK(j.contains(name), "{}: missing field \"{}\"", where, name);
    return j[name];
  };
  auto integer = [&](const char* name, int64_t lo, int64_t hi) {
    const auto& v = field(name);
    EAGLET_CHECK(v.is_number_integer(), "{}: field \"{}\" must be an integer, got {} {}", where,
                 name, type_of(v), v.dump());
    const int64_t x = v.get<int64_t>();
    EAGLET_CHECK(x >= lo && x <= hi, "{}: {}={} must be in [{}, {}]", where, name, x, lo, hi);
    return x;
  };
  auto string = [&](const char* name) {
    const auto& v = field(name);
    EAGLET_CHECK(v.is_string(), "{}: field \"{}\" must be a string, got {} {}", where, name,
                 type_of(v), v.dump());
    return v.get<std::string>();
  };

  ManifestEntry e;
  e.key = string("key");
  try {
    check_key(e.key);
  } catch (const Error& err) {
    EAGLET_FAIL("{}: {}", where, err.message());
  }
  const std::string sample = fmt::format("{}: sample {}", where, e.key);
  e.seq_len = integer("seq_len", 1, kMaxSeqLen);
  e.hidden_size = integer("hidden_size", 1, kMaxHidden);
  e.num_aux = integer("num_aux", 1, 1024);
  e.packed_loss_mask = string("packed_loss_mask");
  PackedMaskInfo mask;
  try {
    mask = check_packed_loss_mask(e.packed_loss_mask);
  } catch (const Error& err) {
    EAGLET_FAIL("{}: {}", sample, err.message());
  }
  EAGLET_CHECK(mask.length <= e.seq_len,
               "{}: packed_loss_mask covers {} tokens, more than seq_len={}", sample, mask.length,
               e.seq_len);
  if (j.contains("usp_sharded")) {
    const auto& v = j["usp_sharded"];
    EAGLET_CHECK(v.is_boolean(), "{}: field \"usp_sharded\" must be true or false, got {} {}", where,
                 type_of(v), v.dump());
    e.usp_sharded = v.get<bool>();
  }
  // An unsharded sample is cut by the reader for its own layout: these fields, when a producer
  // writes them, describe nothing the reader depends on.
  if (e.usp_sharded || j.contains("sp_size")) e.sp_size = integer("sp_size", 1, 1 << 20);
  if (e.usp_sharded || j.contains("ttt_length")) e.ttt_length = integer("ttt_length", 0, 1 << 20);
  if (e.usp_sharded || j.contains("max_seq_length"))
    e.max_seq_length = integer("max_seq_length", 1, kMaxSeqLen);
  if (!e.usp_sharded) {
    e.sp_size = expect.sp_size;
    e.ttt_length = expect.ttt_length;
    e.max_seq_length = expect.max_seq_length;
  }
  if (j.contains("aux_layer_ids")) {
    const auto& v = j["aux_layer_ids"];
    bool ok = v.is_array() && static_cast<int64_t>(v.size()) == e.num_aux;
    for (size_t i = 0; ok && i < v.size(); ++i)
      ok = v[i].is_number_integer() && v[i].get<int64_t>() >= 0;
    EAGLET_CHECK(ok, "{}: aux_layer_ids={} must be a list of num_aux={} integers >= 0", sample,
                 v.dump(), e.num_aux);
    e.aux_layer_ids = v.get<std::vector<int64_t>>();
  }

  if (j.contains("segments")) {
    const auto& v = j["segments"];
    bool ok = v.is_array() && !v.empty();
    for (size_t i = 0; ok && i < v.size(); ++i) ok = v[i].is_number_integer();
    EAGLET_CHECK(ok, "{}: segments={} must be a list of document lengths (integers)", sample,
                 v.dump());
    e.segments = v.get<std::vector<int64_t>>();
    try {
      check_segments(e.segments, e.seq_len);
    } catch (const Error& err) {
      EAGLET_FAIL("{}: {}", sample, err.message());
    }
    EAGLET_CHECK(e.segments.size() == 1 || expect.ring == 1,
                 "{}: a packed sample ({} documents in segments) needs parallel.ring = 1, this run "
                 "has parallel.ring = {} (block 0 stays inside each document on one ring rank "
                 "only; use parallel.ulysses for the sequence parallelism)",
                 sample, e.segments.size(), expect.ring);
  }

  const auto& dtypes = field("dtypes");
  EAGLET_CHECK(dtypes.is_object(), "{}: field \"dtypes\" must be an object, got {} {}", where,
               type_of(dtypes), dtypes.dump());
  auto dtype = [&](const char* name, bool floating) {
    EAGLET_CHECK(dtypes.contains(name), "{}: missing field \"dtypes.{}\"", where, name);
    const auto& v = dtypes[name];
    EAGLET_CHECK(v.is_string(), "{}: field \"dtypes.{}\" must be a string, got {}", where, name,
                 v.dump());
    const std::string s = v.get<std::string>();
    const DtypeInfo* d = find_dtype(s);
    EAGLET_CHECK(d != nullptr && d->floating == floating,
                 "{}: dtypes.{}=\"{}\" is not supported ({})", sample, name, s,
                 floating ? "one of bfloat16, float16, float32" : "one of int64, int32");
    return s;
  };
  e.hs_dtype = dtype("hs", true);
  e.ids_dtype = dtype("ids", false);
  e.lhs_dtype = dtype("lhs", true);

  // The layout depends on these: a sample sharded for another run cannot be read by this one.
  auto same = [&](const char* name, int64_t got, int64_t want, const char* config_key) {
    EAGLET_CHECK(
        got == want,
        "{}: {}={} differs from this run's {}={} (the producer sharded for another layout)", sample,
        name, got, config_key, want);
  };
  same("sp_size", e.sp_size, expect.sp_size, "parallel.ulysses*parallel.ring");
  same("ttt_length", e.ttt_length, expect.ttt_length, "training.ttt_length");
  same("max_seq_length", e.max_seq_length, expect.max_seq_length, "data.max_seq_length");
  if (expect.hidden_size > 0)
    same("hidden_size", e.hidden_size, expect.hidden_size, "model.config.target_hidden_size");
  if (expect.num_aux > 0)
    EAGLET_CHECK(e.num_aux == expect.num_aux,
                 "{}: num_aux={} differs from this run's model.config.num_aux_hidden_states={} (the "
                 "draft's fc takes num_aux_hidden_states aux layers of the target; set it to the "
                 "data's num_aux)",
                 sample, e.num_aux, expect.num_aux);
  return e;
}

// --- writer

ManifestWriter::ManifestWriter(std::string path) : path_(std::move(path)) {
  io::make_dirs(io::parent_dir(path_));
  const bool existed = io::path_exists(path_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  EAGLET_CHECK(fd_ >= 0, "manifest {}: cannot open for appending: {}", path_, std::strerror(errno));
  if (!existed) io::fsync_parent_dir(path_);
}

ManifestWriter::~ManifestWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void ManifestWriter::append(const ManifestEntry& e) {
  const std::string text = manifest_line(e) + "\n";
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    EAGLET_CHECK(n > 0, "manifest {}: appending the line of sample {} failed: {}", path_, e.key,
                 std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  EAGLET_CHECK(::fsync(fd_) == 0, "manifest {}: fsync after sample {} failed: {}", path_, e.key,
               std::strerror(errno));
}

// --- reader

ManifestReader::ManifestReader(std::string path, ManifestExpect expect)
    : path_(std::move(path)), expect_(expect) {}

int64_t ManifestReader::poll() {
  std::lock_guard<std::mutex> lock(mutex_);
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    EAGLET_CHECK(errno == ENOENT, "manifest {}: cannot open: {}", path_, std::strerror(errno));
    return 0;
  }
  std::string text;
  struct stat st {};
  int rc = ::fstat(fd, &st);
  if (rc == 0 && st.st_size > offset_) {
    text.resize(static_cast<size_t>(st.st_size - offset_));
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n =
          ::pread(fd, text.data() + done, text.size() - done, offset_ + static_cast<int64_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    text.resize(done);
  }
  ::close(fd);
  EAGLET_CHECK(rc == 0, "manifest {}: cannot stat: {}", path_, std::strerror(errno));
  EAGLET_CHECK(st.st_size >= offset_,
               "manifest {}: the file shrank from {} to {} bytes while being read (a manifest is "
               "append-only)",
               path_, offset_, static_cast<int64_t>(st.st_size));

  int64_t added = 0;
  size_t pos = 0;
  // Only lines ending in '\n' count: the last one may still be being written.
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    ++lines_;
    std::string line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
    ManifestRecord r;
    r.index = static_cast<int64_t>(records_.size());
    r.line = lines_;
    try {
      r.entry = parse_manifest_line(line, expect_, path_, lines_);
      auto [it, fresh] = keys_.emplace(r.entry.key, r.line);
      if (!fresh)
        EAGLET_FAIL("manifest {}:{}: sample {}: duplicate key (first at line {})", path_, r.line,
                    r.entry.key, it->second);
    } catch (const Error& e) {
      r.error = e.message();
      ++invalid_;
    }
    records_.push_back(std::move(r));
    ++added;
  }
  offset_ += static_cast<int64_t>(pos);
  return added;
}

int64_t ManifestReader::wait_for(int64_t n, std::chrono::milliseconds timeout,
                                 const std::function<bool()>& stop,
                                 std::chrono::milliseconds interval) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    poll();
    const int64_t have = size();
    if (have >= n || (stop && stop())) return have;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= timeout) {
      const double s = std::chrono::duration<double>(waited).count();
      EAGLET_CHECK(io::path_exists(path_),
                   "manifest {}: the file does not exist (waited {:.1f} s; check data.path / "
                   "data.manifest, or start the producer)",
                   path_, s);
      EAGLET_FAIL(
          "manifest {}: waited {:.1f} s for sample {} but the file has {} (is the producer still "
          "writing?)",
          path_, s, n, have);
    }
    std::this_thread::sleep_for(interval);
  }
}

void ManifestReader::require_exists() const {
  EAGLET_CHECK(io::is_file(path_),
               "manifest {}: no such file (check data.path / data.manifest, or write samples "
               "first with `eaglet data synth` or `eaglet data put`)",
               path_);
}

int64_t ManifestReader::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(records_.size());
}

const ManifestRecord& ManifestReader::at(int64_t index) const {
  std::lock_guard<std::mutex> lock(mutex_);
  EAGLET_CHECK(index >= 0 && index < static_cast<int64_t>(records_.size()),
               "manifest {}: sample {} requested but only {} are read", path_, index,
               records_.size());
  return records_[static_cast<size_t>(index)];
}

std::string ManifestReader::first_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& r : records_)
    if (!r.ok()) return r.error;
  return "";
}

int64_t ManifestReader::invalid_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return invalid_;
}

}  // namespace eaglet::data
