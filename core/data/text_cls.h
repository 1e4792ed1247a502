#pragma once
// Labelled text for classification, and the padding collate that variable-length token sequences need.
//
//   read_labelled_text(path)  a file of `labels<TAB>text` lines (labels comma-separated: `a,b<TAB>text` is
//                             multi-label), or a folder with one sub-folder per class whose files are the
//                             examples (each file one example)
//   pad_sequences(seqs)       ids [B, T] padded with pad_id to the longest (or cut at max_len), and the key
//                             mask [B, T] (1 = a real token, 0 = padding) the encoders take as key_valid
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace liandan::data {

struct LabelledText {
  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> labels;  // class indices into `classes`, one or more per text
  std::vector<std::string> classes;          // sorted names
  bool multi_label() const;                  // whether some text has more than one label
};

// `classes` empty: the classes are the sorted distinct names found; otherwise those (a test split uses the
// training split's), and a name outside them is an error naming the file and line.
LabelledText read_labelled_text(const std::string& path, const std::vector<std::string>& classes = {});

struct PaddedBatch {
  Tensor ids;        // i64 [B, T]
  Tensor key_valid;  // f32 [B, T]: 1 for tokens, 0 for padding
};
// T = the longest sequence (at most max_len if max_len > 0; longer ones are cut); an empty sequence gets one
// pad token marked valid, so that every row attends to something.
PaddedBatch pad_sequences(const std::vector<std::vector<int64_t>>& seqs, int64_t pad_id = 0, int64_t max_len = 0);

// Multi-hot targets f32 [B, n_classes] of label lists.
Tensor multi_hot(const std::vector<std::vector<int64_t>>& labels, int64_t n_classes);

}  // namespace liandan::data
