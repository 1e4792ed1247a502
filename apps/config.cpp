#include "apps/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
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

template <class T> const char* wanted();
template <> const char* wanted<int64_t>() { return "an integer"; }
template <> const char* wanted<double>() { return "a number"; }
template <> const char* wanted<bool>() { return "a boolean"; }
template <> const char* wanted<std::string>() { return "a string"; }
template <> const char* wanted<std::vector<int64_t>>() { return "an array of integers"; }
template <> const char* wanted<std::vector<double>>() { return "an array of numbers"; }
template <> const char* wanted<std::vector<std::string>>() { return "an array of strings"; }

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
    LD_FAIL("config ", source_, ": '", key, "' must be ", wanted<T>(), ", got ", type_name(n));
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
  return v;
}

template <class T>
T Config::require(const std::string& key) {
  const toml::node* n = find(key);
  LD_CHECK(n, "config ", source_, ": missing required key '", key, "'");
  T v = convert<T>(*n, key);
  record(key, v);
  return v;
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

void Config::check_all_used() const {
  std::vector<std::string> keys;
  collect_leaves(given_, "", keys);
  for (auto& k : keys) {
    if (used_.count(k)) continue;
    // The closest key the task read, if it is close (at most 2 edits, and less than a third of the key).
    std::string best;
    size_t best_d = 3;
    for (auto& u : used_) {
      size_t d = edit_distance(k, u);
      if (d < best_d && d * 3 < std::max<size_t>(k.size(), 3)) best = u, best_d = d;
    }
    LD_FAIL("config ", source_, ": unknown key '", k, "' (not used by this task; ",
            best.empty() ? std::string("check the spelling") : "did you mean '" + best + "'?", ")");
  }
}

int64_t Config::get_int(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  int64_t v = get<int64_t>(key, fallback);
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
  bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (!ok) fail_range(key, v, "a finite number " + interval(lo, hi, lo_open, hi_open));
  return v;
}

std::vector<int64_t> Config::get_ints(const std::string& key, const std::vector<int64_t>& fallback, int64_t lo,
                                      int64_t hi, size_t min_size) {
  auto v = get<std::vector<int64_t>>(key, fallback);
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
