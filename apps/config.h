#pragma once
// Run configuration: a TOML file (or an embedded default) plus `--set key=value` overrides.
//
// Code reads it through typed getters with defaults, `cfg.get<double>("optim.lr", 1e-3)`: every read
// records the key as known and its final value, so after the run is set up
//   * check_all_used() reports any key in the file that nothing read ("unknown key 'optim.lrr'"),
//   * resolved() is the complete configuration — defaults included — saved in the run directory.
// A value of the wrong type is an error naming the key, the file and both types. Tasks read sizes and
// rates through the range-checked getters (get_int, get_real, get_ints), whose errors name the key, the
// allowed range and the value, so that nonsense is refused before it reaches the library.
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "core/error.h"

namespace liandan::apps {

class Config {
 public:
  Config() = default;
  static Config from_file(const std::string& path);
  static Config from_string(const std::string& text, const std::string& source);

  // "a.b=value": the value is parsed as exactly one TOML value (numbers, booleans, "strings", [arrays]); a
  // bare word that is not TOML is taken as a string (`--set task=lm`). A value that starts like TOML (a
  // number, [, {, a quote) must parse — `steps=99999999999999999999` is out of range, not the string
  // "99999999999999999999" — and a value with a line break (`$'steps=3\nfoo=1'`, which would also set foo)
  // is refused.
  void set(const std::string& assignment);

  template <class T> T get(const std::string& key, const T& fallback);
  template <class T> T require(const std::string& key);
  bool has(const std::string& key) const;

  // Range-checked reads: the value must lie in [lo, hi]; for get_real it must also be finite, and
  // lo_open / hi_open exclude the ends ("'optim.lr' must be a finite number in (0, inf), got nan").
  // get_ints checks every element, and that there is at least `min_size` of them.
  int64_t get_int(const std::string& key, int64_t fallback, int64_t lo,
                  int64_t hi = std::numeric_limits<int64_t>::max());
  double get_real(const std::string& key, double fallback, double lo, double hi, bool lo_open = false,
                  bool hi_open = false);
  std::vector<int64_t> get_ints(const std::string& key, const std::vector<int64_t>& fallback, int64_t lo,
                                int64_t hi = std::numeric_limits<int64_t>::max(), size_t min_size = 0);
  // The error for a key whose value is out of range, for checks that involve several keys:
  //   fail_range(key, value, "a multiple of model.patch 4")  ->  "config S: 'eval.canvas' must be a multiple …, got 30"
  template <class V>
  [[noreturn]] void fail_range(const std::string& key, const V& value, const std::string& expected) const;

  void check_all_used() const;
  // The keys given (file and --set) that nothing has read so far, sorted. Called when building the task
  // fails, they are the likely typos: a misspelled data key that left a default pointing at missing data.
  std::vector<std::string> unread_keys() const;
  // Whether any key under `table` ("data") has been read.
  bool read_any_in(const std::string& table) const;
  // The given keys (file and --set), sorted.
  std::vector<std::string> given_keys() const;
  // Every key read so far: its type, the default its reader passed (TOML text; empty for a required key) and the
  // range the range-checked getters enforce — what `liandan config TASK` prints.
  struct KeyInfo {
    std::string key, type, default_value, range;
    std::string when;  // set by `liandan config` for keys read only under another setting: 'optim.name = "amos"'
  };
  std::vector<KeyInfo> read_keys() const;
  const toml::table& resolved() const { return resolved_; }
  std::string resolved_text() const;
  const std::string& source() const { return source_; }

 private:
  const toml::node* find(const std::string& key) const;
  template <class T> T convert(const toml::node& n, const std::string& key) const;
  template <class T> void record(const std::string& key, const T& value);

  toml::table given_;
  toml::table resolved_;
  toml::table defaults_;                          // the fallbacks of get()
  std::map<std::string, std::string> types_, ranges_;
  std::set<std::string> used_;
  std::string source_ = "<default>";
};

// A TOML basic string of `s` (quotes, backslashes and control characters escaped): for --set and generated TOML.
std::string toml_quote(const std::string& s);

// The candidate closest to `key` if it is close (at most 2 edits and under a third of the key), else "".
std::string closest_key(const std::string& key, const std::vector<std::string>& candidates);

extern template int64_t Config::get(const std::string&, const int64_t&);
extern template double Config::get(const std::string&, const double&);
extern template bool Config::get(const std::string&, const bool&);
extern template std::string Config::get(const std::string&, const std::string&);
extern template std::vector<int64_t> Config::get(const std::string&, const std::vector<int64_t>&);
extern template std::vector<double> Config::get(const std::string&, const std::vector<double>&);
extern template std::vector<std::string> Config::get(const std::string&, const std::vector<std::string>&);
extern template std::string Config::require(const std::string&);

template <class V>
void Config::fail_range(const std::string& key, const V& value, const std::string& expected) const {
  throw Error(detail::cat_message("config ", source_, ": '", key, "' must be ", expected, ", got ", value));
}

}  // namespace liandan::apps
