#include "apps/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace liandan::apps {

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(p);
  return parts;
}

// The table that holds `key`'s last part, creating intermediate tables.
toml::table& parent_table(toml::table& root, const std::vector<std::string>& parts, const std::string& key) {
  toml::table* t = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* n = t->get(parts[i]);
    if (!n) n = &t->insert_or_assign(parts[i], toml::table{}).first->second;
    LD_CHECK(n->is_table(), "config: cannot set '", key, "': '", parts[i], "' is not a table");
    t = n->as_table();
  }
  return *t;
}

void collect_leaves(const toml::table& t, const std::string& prefix, std::vector<std::string>& out) {
  for (auto& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (v.is_table()) collect_leaves(*v.as_table(), key, out);
    else out.push_back(key);
  }
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

// A getter type's names: in errors ("must be an integer") and in `liandan config`'s schema ("integer").
template <class T> struct TypeName;
template <> struct TypeName<int64_t> { static constexpr const char *phrase = "an integer", *word = "integer"; };
template <> struct TypeName<double> { static constexpr const char *phrase = "a number", *word = "number"; };
template <> struct TypeName<bool> { static constexpr const char *phrase = "a boolean", *word = "boolean"; };
template <> struct TypeName<std::string> { static constexpr const char *phrase = "a string", *word = "string"; };
template <> struct TypeName<std::vector<int64_t>> {
  static constexpr const char *phrase = "an array of integers", *word = "integers";
};
template <> struct TypeName<std::vector<double>> {
  static constexpr const char *phrase = "an array of numbers", *word = "numbers";
};
template <> struct TypeName<std::vector<std::string>> {
  static constexpr const char *phrase = "an array of strings", *word = "strings";
};

template <class T> std::optional<T> scalar_of(const toml::node& n);
template <> std::optional<int64_t> scalar_of(const toml::node& n) { return n.value_exact<int64_t>(); }
template <> std::optional<double> scalar_of(const toml::node& n) {
  if (n.is_integer()) return double(*n.value_exact<int64_t>());
  return n.value_exact<double>();
}
template <> std::optional<bool> scalar_of(const toml::node& n) { return n.value_exact<bool>(); }
template <> std::optional<std::string> scalar_of(const toml::node& n) { return n.value_exact<std::string>(); }

template <class T> struct is_vector : std::false_type {};
template <class T> struct is_vector<std::vector<T>> : std::true_type {};

template <class T>
void put(toml::table& t, const std::string& k, const T& v) {
  if constexpr (is_vector<T>::value) {
    toml::array a;
    for (auto& x : v) a.push_back(x);
    t.insert_or_assign(k, std::move(a));
  } else {
    t.insert_or_assign(k, v);
  }
}

}  // namespace

Config Config::from_file(const std::string& path) {
  Config c;
  c.source_ = path;
  try {
    c.given_ = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    LD_FAIL("config ", path, ":", e.source().begin.line, ":", e.source().begin.column, ": ", e.description());
  }
  return c;
}

Config Config::from_string(const std::string& text, const std::string& source) {
  Config c;
  c.source_ = source;
  try {
    c.given_ = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    LD_FAIL("config ", source, ":", e.source().begin.line, ":", e.source().begin.column, ": ", e.description());
  }
  return c;
}

namespace {

// Whether a --set value was meant as TOML rather than as a bare word: it starts like a number, an array, an
// inline table or a quoted string. Such a value must parse; a bare word (`task=lm`, `device=cuda:0`,
// `data.corpus=/tmp/x.txt`) that does not is a string.
bool looks_like_toml(const std::string& v) {
  if (v.empty()) return false;
  const char c = v[0];
  if (c == '[' || c == '{' || c == '"' || c == '\'' || std::isdigit(static_cast<unsigned char>(c))) return true;
  if ((c == '+' || c == '-' || c == '.') && v.size() > 1)
    return std::isdigit(static_cast<unsigned char>(v[1])) || v.substr(1, 3) == "inf" || v.substr(1, 3) == "nan";
  return false;
}

// A plain decimal number: [+-]digits[.digits][e[+-]digits] (underscores allowed, as in TOML).
bool is_decimal_number(const std::string& v, bool& integral) {
  size_t i = 0, n = v.size();
  auto digits = [&] {
    size_t s = i;
    while (i < n && (std::isdigit(static_cast<unsigned char>(v[i])) || v[i] == '_')) ++i;
    return i > s;
  };
  if (i < n && (v[i] == '+' || v[i] == '-')) ++i;
  bool any = digits();
  integral = true;
  if (i < n && v[i] == '.') {
    ++i;
    any = digits() || any;
    integral = false;
  }
  if (!any) return false;
  if (i < n && (v[i] == 'e' || v[i] == 'E')) {
    ++i;
    if (i < n && (v[i] == '+' || v[i] == '-')) ++i;
    if (!digits()) return false;
    integral = false;
  }
  return i == n;
}

}  // namespace

void Config::set(const std::string& assignment) {
  auto eq = assignment.find('=');
  LD_CHECK(eq != std::string::npos && eq > 0, "--set expects key=value, got '", assignment, "'");
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  // A line break would let the value's text define more keys ("3\nfoo=1" sets foo too): one value, one line.
  LD_CHECK(value.find_first_of("\n\r") == std::string::npos, "--set ", key,
           ": the value must be a single TOML value on one line, got '", value, "'");
  for (const auto& part : split_key(key))
    LD_CHECK(!part.empty() && part.find_first_of(" \t\"'[]") == std::string::npos, "--set: bad key '", key,
             "' (expected names separated by dots, e.g. optim.lr)");
  auto parts = split_key(key);
  LD_CHECK(!parts.empty() && key.back() != '.', "--set: bad key '", key, "' (expected names separated by dots, e.g. optim.lr)");
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error& e) {
    bool integral = false;
    if (is_decimal_number(value, integral))  // TOML gives up on numbers outside the 64-bit types
      LD_FAIL("--set: '", key, "' = ", value,
              integral ? " is out of range for a 64-bit integer" : " is not a finite number");
    if (looks_like_toml(value)) LD_FAIL("--set: '", key, "' = ", value, " is not a TOML value (", e.description(),
                                        "); quote a string: ", key, "='\"...\"'");
    parsed = toml::table{};
    parsed.insert_or_assign("v", value);  // a bare word: a string
  }
  LD_CHECK(parsed.size() == 1 && parsed.get("v"), "--set ", key, ": the value must be a single TOML value, got '",
           value, "'");
  toml::table& parent = parent_table(given_, parts, key);
  parent.insert_or_assign(parts.back(), *parsed.get("v"));
}

const toml::node* Config::find(const std::string& key) const {
  const toml::table* t = &given_;
  auto parts = split_key(key);
  for (size_t i = 0; i < parts.size(); ++i) {
    const toml::node* n = t->get(parts[i]);
    if (!n) return nullptr;
    if (i + 1 == parts.size()) return n;
    if (!n->is_table()) return nullptr;
    t = n->as_table();
  }
  return nullptr;
}

bool Config::has(const std::string& key) const { return find(key) != nullptr; }

template <class T>
T Config::convert(const toml::node& n, const std::string& key) const {
  auto fail = [&] {
    LD_FAIL("config ", source_, ": '", key, "' must be ", TypeName<T>::phrase, ", got ", type_name(n));
  };
  if constexpr (is_vector<T>::value) {
    using E = typename T::value_type;
    if (!n.is_array()) fail();
    T out;
    for (auto& el : *n.as_array()) {
      auto v = scalar_of<E>(el);
      if (!v) fail();
      out.push_back(*v);
    }
    return out;
  } else {
    auto v = scalar_of<T>(n);
    if (!v) fail();
    return *v;
  }
}

template <class T>
void Config::record(const std::string& key, const T& value) {
  used_.insert(key);
  auto parts = split_key(key);
  put(parent_table(resolved_, parts, key), parts.back(), value);
}


template <class T>
T Config::get(const std::string& key, const T& fallback) {
  const toml::node* n = find(key);
  T v = n ? convert<T>(*n, key) : fallback;
  record(key, v);
  auto parts = split_key(key);
  put(parent_table(defaults_, parts, key), parts.back(), fallback);
  types_[key] = TypeName<T>::word;
  return v;
}

template <class T>
T Config::require(const std::string& key) {
  const toml::node* n = find(key);
  LD_CHECK(n, "config ", source_, ": missing required key '", key, "'");
  T v = convert<T>(*n, key);
  record(key, v);
  types_[key] = TypeName<T>::word;
  ranges_[key] = "required";
  return v;
}

std::vector<std::string> Config::given_keys() const {
  std::vector<std::string> keys;
  collect_leaves(given_, "", keys);
  std::sort(keys.begin(), keys.end());
  return keys;
}

namespace {
std::string fmt_integral(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", d);
  return buf;
}

// A value as TOML source: numbers in their shortest round-trip form (0.05, not 0.050000000000000003), strings quoted.
std::string toml_text(const toml::node& n) {
  if (auto d = n.value_exact<double>()) {
    if (std::isfinite(*d) && *d == std::floor(*d) && std::abs(*d) < 1e15) return fmt_integral(*d);
    std::ostringstream os;
    for (int p = 1; p <= 17; ++p) {  // the fewest digits that read back as the same double
      os.str("");
      os.precision(p);
      os << *d;
      if (std::stod(os.str()) == *d || !std::isfinite(*d)) break;
    }
    std::string t = os.str();
    if (!std::isfinite(*d)) return std::isnan(*d) ? "nan" : (*d > 0 ? "inf" : "-inf");
    if (t.find_first_of(".e") == std::string::npos) t += ".0";
    return t;
  }
  if (auto str = n.value_exact<std::string>()) return toml_quote(*str);
  if (auto a = n.as_array()) {
    std::string t = "[";
    for (size_t i = 0; i < a->size(); ++i) t += (i ? ", " : "") + toml_text(*a->get(i));
    return t + "]";
  }
  std::ostringstream os;
  n.visit([&](auto& v) { os << v; });
  return os.str();
}
}  // namespace

std::vector<Config::KeyInfo> Config::read_keys() const {
  std::vector<KeyInfo> out;
  for (const std::string& k : used_) {
    KeyInfo info{k, types_.count(k) ? types_.at(k) : "", "", ranges_.count(k) ? ranges_.at(k) : ""};
    if (const toml::node* n = defaults_.at_path(k).node()) {
      info.default_value = toml_text(*n);
    }
    out.push_back(info);
  }
  return out;
}

std::vector<std::string> Config::unread_keys() const {
  std::vector<std::string> keys, out;
  collect_leaves(given_, "", keys);
  for (auto& k : keys)
    if (!used_.count(k)) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

bool Config::read_any_in(const std::string& table) const {
  auto it = used_.lower_bound(table + ".");
  return it != used_.end() && it->rfind(table + ".", 0) == 0;
}

namespace {
// Levenshtein distance (insert, delete, substitute), for the did-you-mean of an unknown key.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += char(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out + "\"";
}

std::string closest_key(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = 3;
  for (auto& u : candidates) {
    size_t d = edit_distance(key, u);
    if (d < best_d && d * 3 < std::max<size_t>(key.size(), 3)) best = u, best_d = d;
  }
  return best;
}

void Config::check_all_used() const {
  std::vector<std::string> keys;
  collect_leaves(given_, "", keys);
  std::vector<std::string> read(used_.begin(), used_.end());
  for (auto& k : keys) {
    if (used_.count(k)) continue;
    std::string best = closest_key(k, read);  // the closest key the task read
    LD_FAIL("config ", source_, ": unknown key '", k, "' (not used by this task; ",
            best.empty() ? std::string("check the spelling") : "did you mean '" + best + "'?", ")");
  }
}

int64_t Config::get_int(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  int64_t v = get<int64_t>(key, fallback);
  ranges_[key] = hi == std::numeric_limits<int64_t>::max() ? ">= " + std::to_string(lo)
                                                           : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v < lo || v > hi) {
    if (hi == std::numeric_limits<int64_t>::max()) fail_range(key, v, ">= " + std::to_string(lo));
    fail_range(key, v, "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

namespace {
std::string interval(double lo, double hi, bool lo_open, bool hi_open) {
  auto num = [](double x) {
    std::ostringstream os;
    os << x;
    return os.str();
  };
  if (std::isinf(hi)) return (lo_open ? "> " : ">= ") + num(lo);
  return std::string("in ") + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
}
}  // namespace

double Config::get_real(const std::string& key, double fallback, double lo, double hi, bool lo_open, bool hi_open) {
  double v = get<double>(key, fallback);
  ranges_[key] = interval(lo, hi, lo_open, hi_open);
  bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (!ok) fail_range(key, v, "a finite number " + interval(lo, hi, lo_open, hi_open));
  return v;
}

std::vector<int64_t> Config::get_ints(const std::string& key, const std::vector<int64_t>& fallback, int64_t lo,
                                      int64_t hi, size_t min_size) {
  auto v = get<std::vector<int64_t>>(key, fallback);
  ranges_[key] = hi == std::numeric_limits<int64_t>::max() ? "each >= " + std::to_string(lo)
                                                           : "each in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  auto show = [&] {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  if (v.size() < min_size)
    fail_range(key, show(), "an array of at least " + std::to_string(min_size) + " integer" + (min_size == 1 ? "" : "s"));
  for (int64_t x : v)
    if (x < lo || x > hi)
      fail_range(key, show(), "an array of integers " +
                                  (hi == std::numeric_limits<int64_t>::max()
                                       ? ">= " + std::to_string(lo)
                                       : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"));
  return v;
}

std::string Config::resolved_text() const {
  std::ostringstream os;
  os << resolved_ << "\n";
  return os.str();
}

template int64_t Config::get(const std::string&, const int64_t&);
template double Config::get(const std::string&, const double&);
template bool Config::get(const std::string&, const bool&);
template std::string Config::get(const std::string&, const std::string&);
template std::vector<int64_t> Config::get(const std::string&, const std::vector<int64_t>&);
template std::vector<double> Config::get(const std::string&, const std::vector<double>&);
template std::vector<std::string> Config::get(const std::string&, const std::vector<std::string>&);
template std::string Config::require(const std::string&);

}  // namespace liandan::apps
