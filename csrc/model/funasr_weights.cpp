// Where the funasr projector's weights live. clip puts every weight in its backend's default
// buffer; on the CPU that means the plain buffer, so none of the CPU backend's "extra" buffer types
// (AMX tiles, repacked quant layouts), which llama.cpp uses for the LLM's weights, would ever run
// the encoder's matrix products. Here each matrix weight goes to the first extra buffer type whose
// kernel takes the product the graph (funasr_graph.cpp) makes with it, the same test llama.cpp's
// model loader makes for its weights; everything else stays in the default buffer.
#include "model/funasr.h"
#include "model/funasr_weights.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"

#include <map>
#include <set>
#include <stdexcept>
#include <string>

namespace {

// every weight the graph multiplies with (ggml_mul_mat's first operand): encoder, adaptor, CTC
std::vector<ggml_tensor *> matrix_weights(const clip_model & model) {
    std::vector<ggml_tensor *> out;
    auto add = [&](ggml_tensor * t) {
        if (t) {
            out.push_back(t);
        }
    };
    auto add_layer = [&](const clip_layer & l) {
        for (ggml_tensor * t : {l.qkv_w, l.q_w, l.k_w, l.v_w, l.o_w, l.ff_up_w, l.ff_down_w}) {
            add(t);
        }
    };
    for (const auto & l : model.layers) {
        add_layer(l);
    }
    add(model.mm_1_w);
    add(model.mm_2_w);
    for (const auto & l : model.mm_a_local_layers) {
        add_layer(l);
    }
    const auto & ctc = model.funasr_ctc;
    add(ctc.mlp_1_w);
    add(ctc.mlp_2_w);
    for (const auto & l : ctc.blocks) {
        add_layer(l);
    }
    add(ctc.out_w);
    return out;
}

// the CPU backend's extra buffer types (empty for other backends)
std::vector<ggml_backend_buffer_type_t> extra_bufts(ggml_backend_dev_t dev) {
    std::vector<ggml_backend_buffer_type_t> out;
    if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        return out;
    }
    auto * reg = ggml_backend_dev_backend_reg(dev);
    auto get = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (get) {
        for (auto * p = get(dev); p && *p; ++p) {
            out.push_back(*p);
        }
    }
    return out;
}

// does `dev` run w x (x: f32 rows of w's width) with w in a buffer of `buft`?
bool runs_product(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_tensor * w) {
    ggml_init_params ip = {/*.mem_size =*/ 4 * ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) {
        return false;
    }
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 16);
    ggml_tensor * op = ggml_mul_mat(ctx, w, x);
    ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(buft, 0);  // only its type is read
    ggml_backend_buffer_t saved = w->buffer;
    w->buffer = probe;
    const bool ok = ggml_backend_dev_supports_op(dev, op);
    w->buffer = saved;
    ggml_backend_buffer_free(probe);
    ggml_free(ctx);
    return ok;
}

// one buffer of `buft` holding `tensors` (placed in order)
ggml_backend_buffer_t alloc_in(ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> & tensors) {
    const size_t align = ggml_backend_buft_get_alignment(buft);
    size_t size = 0;
    for (ggml_tensor * t : tensors) {
        size += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), align);
    }
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, size + align);
    if (!buf) {
        throw std::runtime_error(std::string("funasr: cannot allocate ") + std::to_string(size >> 20) +
                                 " MiB of weights in " + ggml_backend_buft_name(buft));
    }
    ggml_tallocr talloc = ggml_tallocr_new(buf);
    for (ggml_tensor * t : tensors) {
        if (ggml_tallocr_alloc(&talloc, t) != GGML_STATUS_SUCCESS) {
            ggml_backend_buffer_free(buf);
            throw std::runtime_error(std::string("funasr: cannot place weight ") + t->name);
        }
    }
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    return buf;
}

}  // namespace

ggml_backend_buffer_t funasr_alloc_weights(ggml_context * ctx_data, const clip_model & model, ggml_backend_t backend,
                                           ggml_backend_buffer_type_t buft, std::vector<ggml_backend_buffer_ptr> & extra) {
    ggml_backend_dev_t dev = ggml_backend_get_device(backend);
    const auto candidates = dev ? extra_bufts(dev) : std::vector<ggml_backend_buffer_type_t>();
    std::map<ggml_backend_buffer_type_t, std::vector<ggml_tensor *>> placed;
    std::set<const ggml_tensor *> moved;
    if (!candidates.empty() && funasr_use_extra_bufts()) {
        for (ggml_tensor * w : matrix_weights(model)) {
            for (auto * eb : candidates) {
                if (runs_product(dev, eb, w)) {
                    placed[eb].push_back(w);
                    moved.insert(w);
                    break;
                }
            }
        }
    }
    std::vector<ggml_tensor *> rest;
    for (ggml_tensor * t = ggml_get_first_tensor(ctx_data); t; t = ggml_get_next_tensor(ctx_data, t)) {
        if (!moved.count(t)) {
            rest.push_back(t);
        }
    }
    ggml_backend_buffer_ptr buf(alloc_in(buft, rest));
    for (auto & [eb, tensors] : placed) {
        extra.emplace_back(alloc_in(eb, tensors));
    }
    return buf.release();
}
