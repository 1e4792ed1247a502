#pragma once
// Run configuration: a TOML file (or an embedded default) plus `--set key=value` overrides.
//
// Code reads it through typed getters with defaults, `cfg.get<double>("optim.lr", 1e-3)`: every read
// records the key as known and its final value, so after the run is set up
//   * check_all_used() reports any key in the file that nothing read ("unknown key 'optim.lrr'"),
//   * resolved() is the complete configuration — defaults included — saved in the run directory.
// A value of the wrong type is an error naming the key, the file and both types.
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace liandan::apps {

class Config {
 public:
  Config() = default;
  static Config from_file(const std::string& path);
  static Config from_string(const std::string& text, const std::string& source);

  // "a.b=value": the value is parsed as TOML (numbers, booleans, "strings", [arrays]); anything that
  // does not parse is taken as a bare string (`--set task=lm`).
  void set(const std::string& assignment);

  template <class T> T get(const std::string& key, const T& fallback);
  template <class T> T require(const std::string& key);
  bool has(const std::string& key) const;

  void check_all_used() const;
  const toml::table& resolved() const { return resolved_; }
  std::string resolved_text() const;
  const std::string& source() const { return source_; }

 private:
  const toml::node* find(const std::string& key) const;
  template <class T> T convert(const toml::node& n, const std::string& key) const;
  template <class T> void record(const std::string& key, const T& value);

  toml::table given_;
  toml::table resolved_;
  std::set<std::string> used_;
  std::string source_ = "<default>";
};

extern template int64_t Config::get(const std::string&, const int64_t&);
extern template double Config::get(const std::string&, const double&);
extern template bool Config::get(const std::string&, const bool&);
extern template std::string Config::get(const std::string&, const std::string&);
extern template std::vector<int64_t> Config::get(const std::string&, const std::vector<int64_t>&);
extern template std::vector<double> Config::get(const std::string&, const std::vector<double>&);
extern template std::vector<std::string> Config::get(const std::string&, const std::vector<std::string>&);
extern template std::string Config::require(const std::string&);

}  // namespace liandan::apps
