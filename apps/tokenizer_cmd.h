#pragma once
// `liandan tokenizer train CORPUS --vocab N [--out FILE] [--min-frequency F]`: a byte-level BPE
// (core/data/bpe.h) learned from a text file or a folder of them (core/data/text.h read_text), saved as JSON;
// prints the merges learned, the time and MB/s of training and of encoding the corpus with the result.
// `liandan tokenizer encode FILE TEXT`: the ids of TEXT, and its tokens.
//
// And the tasks' key `data.tokenizer` (lm, text_cls): "" (default: the tokenizer data.mode names) or the path
// of such a file.
#include <cstdint>
#include <optional>
#include <string>

#include "apps/config.h"
#include "core/data/text.h"

namespace liandan::apps {

int tokenizer_train(const std::string& corpus, int64_t vocab, const std::string& out, int64_t min_frequency);
int tokenizer_encode(const std::string& file, const std::string& text);

// The BPE tokenizer that `data.tokenizer` names, or nullopt when it is "" (then data.mode decides). `mode` is
// the task's data.mode: a BPE is byte-level, so data.mode = chars with a data.tokenizer is an error. A file
// that does not load is an error naming the key, the path and what is wrong with it.
std::optional<data::Tokenizer> bpe_tokenizer_from_config(Config& c, const std::string& mode);

// A run that trains with a BPE keeps its fingerprint (data::BPE::fingerprint) as the last entry of the task's state,
// so that a checkpoint resumed or sampled with another file of the same vocab size is refused, not silently decoded
// with other merges. with_bpe_fingerprint appends it (no BPE: `s` as it is); without_bpe_fingerprint checks and
// removes it (an Error naming data.tokenizer on a mismatch).
std::vector<int64_t> with_bpe_fingerprint(const data::Tokenizer& tok, std::vector<int64_t> s);
std::vector<int64_t> without_bpe_fingerprint(const data::Tokenizer& tok, std::vector<int64_t> s);

}  // namespace liandan::apps
