// Rows of one 2-D tensor of a GGUF file, read from the file on demand and dequantized with
// ggml's own to_float (the values llama.cpp's get_rows gives). For tables of which a job needs a
// few rows only: the LLM's token embeddings (engine.cpp), the CTC head's output layer
// (ctc_head.cpp).
#pragma once

#include "ggml.h"
#include "gguf.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace funasr {

class GgufRows {
public:
    // throws std::runtime_error naming the file and tensor when it is missing, not 2-D or of a
    // type ggml cannot dequantize
    GgufRows(const std::string & path, const std::string & tensor) : path_(path), name_(tensor) {
        ggml_context * meta = nullptr;
        gguf_init_params gp{};
        gp.no_alloc = true;
        gp.ctx = &meta;  // tensor shapes and types, no data
        gguf_context * g = gguf_init_from_file(path.c_str(), gp);
        if (!g) throw std::runtime_error("cannot read the GGUF file " + path);
        const int64_t id = gguf_find_tensor(g, tensor.c_str());
        const ggml_tensor * t = id >= 0 && meta ? ggml_get_tensor(meta, tensor.c_str()) : nullptr;
        const bool flat = t && t->ne[2] == 1 && t->ne[3] == 1;
        if (t) {
            type_ = t->type;
            width_ = t->ne[0];
            n_rows_ = t->ne[1];
            offset_ = (int64_t) (gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id));
        }
        if (meta) ggml_free(meta);
        gguf_free(g);
        if (!t) throw std::runtime_error(path + " has no tensor " + tensor);
        if (!flat || (type_ != GGML_TYPE_F32 && !ggml_get_type_traits(type_)->to_float)) {
            throw std::runtime_error(path + ": " + tensor + " is not a 2-D table of a type ggml can read");
        }
        row_bytes_ = ggml_row_size(type_, width_);
    }

    int64_t width() const { return width_; }
    int64_t n_rows() const { return n_rows_; }

    // row i as floats (out: width() values)
    void read(int64_t i, float * out) const {
        if (i < 0 || i >= n_rows_) throw std::out_of_range(name_ + ": row " + std::to_string(i) + " out of range");
        std::vector<char> raw(row_bytes_);
        std::ifstream f(path_, std::ios::binary);
        f.seekg(offset_ + i * (int64_t) row_bytes_);
        f.read(raw.data(), (std::streamsize) raw.size());
        if (!f) throw std::runtime_error("cannot read row " + std::to_string(i) + " of " + name_ + " from " + path_);
        if (type_ == GGML_TYPE_F32) {
            std::copy_n(reinterpret_cast<const float *>(raw.data()), width_, out);
        } else {
            ggml_get_type_traits(type_)->to_float(raw.data(), out, width_);
        }
    }

private:
    std::string path_, name_;
    ggml_type type_ = GGML_TYPE_F32;
    int64_t offset_ = -1, width_ = 0, n_rows_ = 0;
    size_t row_bytes_ = 0;
};

}  // namespace funasr
