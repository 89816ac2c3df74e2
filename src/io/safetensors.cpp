// Safetensors reading (mmap, header validated before any tensor is touched), sharded HF folders
// (model.safetensors.index.json) and atomic writing. Data are little-endian, like every host
// eaglet runs on (checked at compile time).
#include "io/safetensors.h"

#include <ATen/ops/empty.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/tensor_text.h"
#include "io/files.h"

namespace eaglet::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data are little-endian; eaglet reads them without byte swapping");

// One row per supported dtype: the name in the header, the ATen type, bytes per element.
struct DtypeEntry {
  const char* name;
  c10::ScalarType type;
  size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", c10::kDouble, 8},    {"F32", c10::kFloat, 4}, {"F16", c10::kHalf, 2},
    {"BF16", c10::kBFloat16, 2}, {"I64", c10::kLong, 8},  {"I32", c10::kInt, 4},
    {"I16", c10::kShort, 2},     {"I8", c10::kChar, 1},   {"U8", c10::kByte, 1},
    {"BOOL", c10::kBool, 1},
};

const DtypeEntry* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeEntry* dtype_by_type(c10::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

std::string known_dtypes() {
  std::vector<std::string> names;
  for (const auto& d : kDtypes) names.emplace_back(d.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string errno_text() {
  return std::strerror(errno);
}

// Up to five names of `available`, those sharing the last dotted component of `wanted` first,
// for "no such tensor" messages.
template <typename Names>
std::string some_names(const Names& available, const std::string& wanted) {
  if (available.empty()) return "it holds no tensors";
  std::string last = wanted.substr(wanted.rfind('.') == std::string::npos ? 0 : wanted.rfind('.'));
  std::vector<std::string> picked;
  for (const auto& n : available)
    if (picked.size() < 5 && n.size() >= last.size() &&
        n.compare(n.size() - last.size(), last.size(), last) == 0)
      picked.push_back(n);
  for (const auto& n : available)
    if (picked.size() < 5 && std::find(picked.begin(), picked.end(), n) == picked.end())
      picked.push_back(n);
  return fmt::format("{} tensors, e.g. {}{}", available.size(), fmt::join(picked, ", "),
                     available.size() > picked.size() ? ", ..." : "");
}

// numel of `shape`, or false on overflow.
bool checked_numel(const std::vector<int64_t>& shape, uint64_t& numel) {
  numel = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) return false;
  return true;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& e,
                       uint64_t data_size) {
  EAGLET_CHECK(e.is_object(), "{}: header entry for tensor '{}' is not a JSON object", path, name);
  EAGLET_CHECK(e.contains("dtype") && e["dtype"].is_string(),
               "{}: tensor '{}' has no \"dtype\" string in the header", path, name);
  TensorInfo info;
  info.dtype = e["dtype"].get<std::string>();
  const DtypeEntry* dt = dtype_by_name(info.dtype);
  EAGLET_CHECK(dt != nullptr, "{}: tensor '{}' has unknown dtype \"{}\" (eaglet reads {})", path,
               name, info.dtype, known_dtypes());
  EAGLET_CHECK(e.contains("shape") && e["shape"].is_array(),
               "{}: tensor '{}' has no \"shape\" array in the header", path, name);
  for (const auto& d : e["shape"]) {
    EAGLET_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0,
                 "{}: tensor '{}' has a bad shape {} (dimensions must be integers >= 0)", path,
                 name, e["shape"].dump());
    info.shape.push_back(d.get<int64_t>());
  }
  const auto& off = e.contains("data_offsets") ? e["data_offsets"] : nlohmann::json();
  EAGLET_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                   off[1].is_number_unsigned(),
               "{}: tensor '{}' needs \"data_offsets\": [begin, end] (two integers >= 0), got {}",
               path, name, off.dump());
  info.begin = off[0].get<uint64_t>();
  info.end = off[1].get<uint64_t>();
  EAGLET_CHECK(info.begin <= info.end && info.end <= data_size,
               "{}: tensor '{}' has data_offsets [{}, {}] outside the data section ({} bytes); the "
               "file is truncated or its header is wrong",
               path, name, info.begin, info.end, data_size);
  uint64_t numel = 0, bytes = 0;
  EAGLET_CHECK(checked_numel(info.shape, numel) && !__builtin_mul_overflow(numel, dt->size, &bytes),
               "{}: tensor '{}' has an absurd shape {}", path, name, shape_text(info.shape));
  EAGLET_CHECK(bytes == info.end - info.begin,
               "{}: tensor '{}' ({} {}) needs {} bytes but data_offsets [{}, {}] span {} bytes",
               path, name, info.dtype, shape_text(info.shape), bytes, info.begin, info.end,
               info.end - info.begin);
  return info;
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    EAGLET_CHECK(n > 0, "{}: write failed: {}", path, errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

// --- SafetensorsFile ------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EAGLET_CHECK(fd >= 0, "{}: cannot open safetensors file: {}", path, errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    EAGLET_FAIL("{}: not a regular file", path);
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    EAGLET_FAIL(
        "{}: file is {} bytes, shorter than the 8-byte header length; it is truncated or "
        "not a safetensors file",
        path, map_size_);
  }
  void* m = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  EAGLET_CHECK(m != MAP_FAILED, "{}: mmap of {} bytes failed: {}", path, map_size_, errno_text());
  map_ = static_cast<const uint8_t*>(m);
  try {
    uint64_t header_len = 0;
    std::memcpy(&header_len, map_, 8);
    EAGLET_CHECK(header_len <= map_size_ - 8,
                 "{}: header length {} runs past the end of the file ({} bytes); the file is "
                 "truncated or not a safetensors file",
                 path, header_len, map_size_);
    data_start_ = 8 + header_len;
    const uint64_t data_size = map_size_ - data_start_;
    nlohmann::json header;
    try {
      const char* h = reinterpret_cast<const char*>(map_ + 8);
      header = nlohmann::json::parse(h, h + header_len);
    } catch (const nlohmann::json::exception& e) {
      EAGLET_FAIL("{}: header ({} bytes) is not valid JSON: {}", path, header_len, e.what());
    }
    EAGLET_CHECK(header.is_object(), "{}: header is JSON but not an object ({})", path,
                 header.type_name());
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        EAGLET_CHECK(entry.is_object() || entry.is_null(),
                     "{}: \"__metadata__\" must be an object of strings", path);
        if (entry.is_null()) continue;
        for (const auto& [k, v] : entry.items()) {
          EAGLET_CHECK(v.is_string(), "{}: __metadata__ value of '{}' is not a string ({})", path,
                       k, v.dump());
          metadata_[k] = v.get<std::string>();
        }
        continue;
      }
      tensors_[name] = parse_entry(path, name, entry, data_size);
    }
    // No two tensors may share bytes.
    std::vector<std::pair<const std::string*, const TensorInfo*>> order;
    for (const auto& [name, info] : tensors_)
      if (info.end > info.begin) order.emplace_back(&name, &info);
    std::sort(order.begin(), order.end(),
              [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
    for (size_t i = 1; i < order.size(); ++i)
      EAGLET_CHECK(order[i].second->begin >= order[i - 1].second->end,
                   "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section", path,
                   *order[i - 1].first, order[i - 1].second->begin, order[i - 1].second->end,
                   *order[i].first, order[i].second->begin, order[i].second->end);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::vector<std::string> names;
    for (const auto& kv : tensors_) names.push_back(kv.first);
    EAGLET_FAIL("{}: no tensor '{}' ({})", path_, name, some_names(names, name));
  }
  return it->second;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const DtypeEntry* dt = dtype_by_name(ti.dtype);
  at::Tensor t = at::empty(ti.shape, at::TensorOptions().dtype(dt->type));
  const uint8_t* src = map_ + data_start_ + ti.begin;
  const size_t bytes = ti.end - ti.begin;
  if (dt->type == c10::kBool) {
    // Any byte other than 0/1 would be an invalid bool in ATen.
    for (size_t i = 0; i < bytes; ++i)
      EAGLET_CHECK(src[i] <= 1, "{}: BOOL tensor '{}' holds byte {} at element {} (must be 0 or 1)",
                   path_, name, static_cast<int>(src[i]), i);
  }
  if (bytes > 0) std::memcpy(t.data_ptr(), src, bytes);
  return t;
}

at::Tensor SafetensorsFile::get(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const {
  const TensorInfo& ti = info(name);
  EAGLET_CHECK(ti.shape == expected_shape, "{}: tensor '{}' has shape {}, expected {}", path_, name,
               shape_text(ti.shape), shape_text(expected_shape));
  return get(name);
}

// --- SafetensorsSet -------------------------------------------------------------------------

SafetensorsSet::SafetensorsSet(const std::string& folder_or_file) : where_(folder_or_file) {
  EAGLET_CHECK(path_exists(folder_or_file), "{}: no such file or folder", folder_or_file);
  auto add_file = [&](const std::string& file) {
    auto f = std::make_unique<SafetensorsFile>(file);
    for (const auto& kv : f->tensors()) {
      auto [it, fresh] = weight_map_.emplace(kv.first, file);
      EAGLET_CHECK(fresh, "{}: tensor '{}' is in both {} and {}", folder_or_file, kv.first,
                   it->second, file);
    }
    files_[file] = std::move(f);
  };
  if (!is_dir(folder_or_file)) {
    add_file(folder_or_file);
    return;
  }
  const std::string index = join_path(folder_or_file, "model.safetensors.index.json");
  if (path_exists(index)) {
    nlohmann::json j;
    std::ifstream in(index);
    EAGLET_CHECK(in.good(), "{}: cannot read", index);
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      EAGLET_FAIL("{}: not valid JSON: {}", index, e.what());
    }
    EAGLET_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                 "{}: needs a \"weight_map\" object {{tensor: shard file}}", index);
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      EAGLET_CHECK(file.is_string(), "{}: weight_map entry of tensor '{}' is not a file name ({})",
                   index, name, file.dump());
      const std::string shard = join_path(folder_or_file, file.get<std::string>());
      weight_map_[name] = shard;
      if (shards.insert(shard).second)
        EAGLET_CHECK(is_file(shard), "{}: shard {} (holding tensor '{}') does not exist", index,
                     shard, name);
    }
    return;  // shards are mapped on first use: a large target needs only a few of them
  }
  const std::string single = join_path(folder_or_file, "model.safetensors");
  if (path_exists(single)) {
    add_file(single);
    return;
  }
  std::vector<std::string> found;
  for (const auto& name : list_dir(folder_or_file))
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0)
      found.push_back(join_path(folder_or_file, name));
  EAGLET_CHECK(!found.empty(),
               "{}: holds neither model.safetensors nor model.safetensors.index.json nor any "
               "*.safetensors file",
               folder_or_file);
  for (const auto& f : found) add_file(f);  // list_dir sorts
}

bool SafetensorsSet::has(const std::string& name) const {
  return weight_map_.count(name) > 0;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  for (const auto& kv : weight_map_) out.push_back(kv.first);
  return out;
}

const SafetensorsFile& SafetensorsSet::file_of(const std::string& name) const {
  auto it = weight_map_.find(name);
  EAGLET_CHECK(it != weight_map_.end(), "{}: no tensor '{}' ({})", where_, name,
               some_names(names(), name));
  auto& f = files_[it->second];
  if (!f) f = std::make_unique<SafetensorsFile>(it->second);
  EAGLET_CHECK(f->has(name), "{}: the index puts tensor '{}' in {}, which does not hold it", where_,
               name, it->second);
  return *f;
}

at::Tensor SafetensorsSet::get(const std::string& name) const {
  return file_of(name).get(name);
}

at::Tensor SafetensorsSet::get(const std::string& name,
                               const std::vector<int64_t>& expected_shape) const {
  return file_of(name).get(name, expected_shape);
}

const TensorInfo& SafetensorsSet::info(const std::string& name) const {
  return file_of(name).info(name);
}

// --- writing --------------------------------------------------------------------------------

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    EAGLET_CHECK(!name.empty() && name != "__metadata__", "{}: invalid tensor name '{}'", path,
                 name);
    EAGLET_CHECK(seen.insert(name).second, "{}: tensor '{}' given twice", path, name);
    EAGLET_CHECK(tensor.defined(), "{}: tensor '{}' is undefined", path, name);
    const DtypeEntry* dt = dtype_by_type(tensor.scalar_type());
    EAGLET_CHECK(dt != nullptr,
                 "{}: tensor '{}' has dtype {}, which safetensors here cannot hold ({})", path,
                 name, c10::toString(tensor.scalar_type()), known_dtypes());
    at::Tensor t = tensor.detach().to(c10::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dt->size;
    header[name] = {{"dtype", dt->name},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  const uint64_t header_len = text.size();

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EAGLET_CHECK(fd >= 0, "{}: cannot create {}: {}", path, tmp, errno_text());
  try {
    write_all(fd, &header_len, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const auto& t : data)
      if (t.numel() > 0) write_all(fd, t.data_ptr(), t.numel() * t.element_size(), tmp);
    EAGLET_CHECK(::fsync(fd) == 0, "{}: fsync failed: {}", tmp, errno_text());
    int rc = ::close(fd);
    fd = -1;
    EAGLET_CHECK(rc == 0, "{}: close failed: {}", tmp, errno_text());
    EAGLET_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "{}: rename from {} failed: {}", path,
                 tmp, errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_parent_dir(path);
}

}  // namespace eaglet::io
