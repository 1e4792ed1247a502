#include "apps/config.h"

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

void Config::set(const std::string& assignment) {
  auto eq = assignment.find('=');
  LD_CHECK(eq != std::string::npos && eq > 0, "--set expects key=value, got '", assignment, "'");
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  auto parts = split_key(key);
  toml::table& parent = parent_table(given_, parts, key);
  try {
    toml::table parsed = toml::parse("v = " + value);
    parent.insert_or_assign(parts.back(), *parsed.get("v"));
  } catch (const toml::parse_error&) {
    parent.insert_or_assign(parts.back(), value);  // a bare word: a string
  }
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

void Config::check_all_used() const {
  std::vector<std::string> keys;
  collect_leaves(given_, "", keys);
  for (auto& k : keys)
    LD_CHECK(used_.count(k), "config ", source_, ": unknown key '", k, "' (not used by this task; check the spelling)");
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
