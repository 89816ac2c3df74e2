// JSON reading with file- and key-naming errors.
#include "io/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace eaglet::io {

nlohmann::json read_json_object(const std::string& path) {
  std::ifstream in(path);
  EAGLET_CHECK(in.good(), "{}: cannot open: {}", path, std::strerror(errno));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    EAGLET_FAIL("{}: not valid JSON: {}", path, e.what());
  }
  EAGLET_CHECK(j.is_object(), "{}: must hold a JSON object, not {}", path, j.type_name());
  return j;
}

int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& path) {
  EAGLET_CHECK(j.contains(key) && !j[key].is_null(), "{}: key \"{}\" is missing", path, key);
  EAGLET_CHECK(j[key].is_number_integer(), "{}: key \"{}\" must be an integer, got {}", path, key,
               j[key].dump());
  return j[key].get<int64_t>();
}

double json_number(const nlohmann::json& j, const std::string& key, const std::string& path) {
  EAGLET_CHECK(j.contains(key) && !j[key].is_null(), "{}: key \"{}\" is missing", path, key);
  EAGLET_CHECK(j[key].is_number(), "{}: key \"{}\" must be a number, got {}", path, key,
               j[key].dump());
  return j[key].get<double>();
}

int64_t json_int_or(const nlohmann::json& j, const std::string& key, int64_t fallback,
                    const std::string& path) {
  return j.contains(key) && !j[key].is_null() ? json_int(j, key, path) : fallback;
}

double json_number_or(const nlohmann::json& j, const std::string& key, double fallback,
                      const std::string& path) {
  return j.contains(key) && !j[key].is_null() ? json_number(j, key, path) : fallback;
}

bool json_bool_or(const nlohmann::json& j, const std::string& key, bool fallback,
                  const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  EAGLET_CHECK(j[key].is_boolean(), "{}: key \"{}\" must be true or false, got {}", path, key,
               j[key].dump());
  return j[key].get<bool>();
}

}  // namespace eaglet::io
