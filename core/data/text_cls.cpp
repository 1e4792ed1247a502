#include "core/data/text_cls.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/data/text.h"
#include "core/error.h"

namespace liandan::data {

namespace fs = std::filesystem;

bool LabelledText::multi_label() const {
  for (auto& l : labels)
    if (l.size() > 1) return true;
  return false;
}

namespace {

// (names per example, text) before the names become indices.
struct Raw {
  std::vector<std::vector<std::string>> names;
  std::vector<std::string> texts;
  std::vector<std::string> where;  // "file:line" for errors
};

Raw read_lines(const std::string& path) {
  Raw r;
  std::istringstream in(read_text(path));
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    size_t tab = line.find('\t');
    LD_CHECK(tab != std::string::npos, "read_labelled_text: ", path, ":", n, ": no TAB; expected `label<TAB>text` ",
             "(several labels: `a,b<TAB>text`)");
    std::vector<std::string> names;
    std::istringstream ls(line.substr(0, tab));
    for (std::string l; std::getline(ls, l, ',');)
      if (!l.empty() && std::find(names.begin(), names.end(), l) == names.end()) names.push_back(l);
    LD_CHECK(!names.empty(), "read_labelled_text: ", path, ":", n, ": empty label");
    r.names.push_back(names);
    r.texts.push_back(line.substr(tab + 1));
    r.where.push_back(path + ":" + std::to_string(n));
  }
  return r;
}

Raw read_folders(const std::string& dir) {
  Raw r;
  std::vector<fs::path> classes;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  LD_CHECK(!classes.empty(), "read_labelled_text: ", dir, " has no sub-folders (one per class, holding text files)");
  for (auto& c : classes) {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(c))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      r.names.push_back({c.filename().string()});
      r.texts.push_back(read_text(f.string()));
      r.where.push_back(f.string());
    }
  }
  return r;
}

}  // namespace

LabelledText read_labelled_text(const std::string& path, const std::vector<std::string>& classes) {
  LD_CHECK(fs::exists(path), "read_labelled_text: ", path, " not found");
  Raw r = fs::is_directory(path) ? read_folders(path) : read_lines(path);
  LD_CHECK(!r.texts.empty(), "read_labelled_text: ", path, " holds no examples");
  LabelledText out;
  out.classes = classes;
  if (out.classes.empty()) {
    for (auto& ns : r.names) out.classes.insert(out.classes.end(), ns.begin(), ns.end());
    std::sort(out.classes.begin(), out.classes.end());
    out.classes.erase(std::unique(out.classes.begin(), out.classes.end()), out.classes.end());
  }
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < out.classes.size(); ++i) index[out.classes[i]] = int64_t(i);
  for (size_t i = 0; i < r.texts.size(); ++i) {
    std::vector<int64_t> ids;
    for (auto& n : r.names[i]) {
      auto it = index.find(n);
      LD_CHECK(it != index.end(), "read_labelled_text: ", r.where[i], ": label '", n, "' is not one of the ",
               out.classes.size(), " training classes");
      ids.push_back(it->second);
    }
    out.labels.push_back(ids);
  }
  out.texts = std::move(r.texts);
  return out;
}

PaddedBatch pad_sequences(const std::vector<std::vector<int64_t>>& seqs, int64_t pad_id, int64_t max_len) {
  LD_CHECK(!seqs.empty(), "pad_sequences: no sequences");
  LD_CHECK(max_len >= 0, "pad_sequences: max_len ", max_len, " must be >= 0 (0: no limit)");
  int64_t t = 1;
  for (auto& s : seqs) t = std::max(t, int64_t(s.size()));
  if (max_len > 0) t = std::min(t, max_len);
  int64_t b = int64_t(seqs.size());
  std::vector<int64_t> ids(size_t(b * t), pad_id);
  std::vector<float> valid(size_t(b * t), 0.0f);
  for (int64_t i = 0; i < b; ++i) {
    int64_t n = std::min<int64_t>(int64_t(seqs[size_t(i)].size()), t);
    for (int64_t j = 0; j < n; ++j) {
      ids[size_t(i * t + j)] = seqs[size_t(i)][size_t(j)];
      valid[size_t(i * t + j)] = 1.0f;
    }
    if (n == 0) valid[size_t(i * t)] = 1.0f;  // a row with no valid key would make attention undefined
  }
  return {from_vector(ids, {b, t}), from_vector(valid, {b, t})};
}

Tensor multi_hot(const std::vector<std::vector<int64_t>>& labels, int64_t n_classes) {
  std::vector<float> v(labels.size() * size_t(n_classes), 0.0f);
  for (size_t i = 0; i < labels.size(); ++i)
    for (int64_t l : labels[i]) {
      LD_CHECK(l >= 0 && l < n_classes, "multi_hot: label ", l, " outside [0, ", n_classes, ")");
      v[i * size_t(n_classes) + size_t(l)] = 1.0f;
    }
  return from_vector(v, {int64_t(labels.size()), n_classes});
}

}  // namespace liandan::data
