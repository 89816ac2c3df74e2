// JSON files of HF folders (config.json, index files): reading with errors that name the file and
// the key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace eaglet::io {

// Parses `path`; throws eaglet::Error naming the file when it is missing or not a JSON object.
nlohmann::json read_json_object(const std::string& path);

// A required integer / number key of `j`, read from `path`: throws naming the file and the key
// when it is missing or has another type.
int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& path);
double json_number(const nlohmann::json& j, const std::string& key, const std::string& path);
// The same, returning `fallback` when the key is absent or null.
int64_t json_int_or(const nlohmann::json& j, const std::string& key, int64_t fallback,
                    const std::string& path);
double json_number_or(const nlohmann::json& j, const std::string& key, double fallback,
                      const std::string& path);
bool json_bool_or(const nlohmann::json& j, const std::string& key, bool fallback,
                  const std::string& path);

}  // namespace eaglet::io
