// Tokenizing and detokenizing with the LLM's vocabulary (see tokens.h).
#include "engine/tokens.h"

#include "common.h"
#include "engine/error.h"
#include "gguf.h"
#include "model/funasr_keys.h"

#include <climits>

namespace funasr {

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special) {
    // llama_tokenize counts in int32: refuse what it cannot report instead of letting common abort
    if (text.size() > (size_t) INT32_MAX / 2) throw error(errc::invalid_argument, "text too long to tokenize");
    return common_tokenize(vocab, text, add_special, parse_special);
}

std::string token_bytes(const llama_vocab * vocab, const std::vector<int32_t> & file_types,
                        const std::vector<llama_token> & ids, bool skip_special) {
    std::string out;
    for (llama_token t : ids) {
        if (skip_special && t >= 0 && (size_t) t < file_types.size()) {
            if (file_types[t] != LLAMA_TOKEN_TYPE_CONTROL) out += common_token_to_piece(vocab, t, /*special*/ true);
        } else {
            out += common_token_to_piece(vocab, t, !skip_special);
        }
    }
    return out;
}

std::vector<int32_t> file_token_types(const std::string & path) {
    gguf_init_params gp{};
    gp.no_alloc = true;
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) return {};
    std::vector<int32_t> types;
    const int64_t key = gguf_find_key(g, KEY_TOKEN_TYPE);
    if (key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, key) == GGUF_TYPE_INT32) {
        const int32_t * data = (const int32_t *) gguf_get_arr_data(g, key);
        types.assign(data, data + gguf_get_arr_n(g, key));
    }
    gguf_free(g);
    return types;
}

}  // namespace funasr
