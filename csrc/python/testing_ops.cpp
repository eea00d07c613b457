// funasr_cpp._testing.record_ops: every ggml node the engine's graphs compute, recorded by running
// them (a ggml_backend_sched eval callback on both the mtmd context, which runs the
// encoder/adaptor/CTC graph, and the llama context, which runs the LLM), for the GPU op audit
// (tools/op_audit.py, tests/test_op_audit.py, docs/GPU_OPS.md).
//
// The engine is loaded as funasr::Transcriber loads it (engine/transcriber.cpp: the same context
// params and mtmd params), only with the callbacks set: keep the two in step.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "engine/engine.h"
#include "engine/handles.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "python/native.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace py = pybind11;

namespace {

std::string shape_str(const ggml_tensor * t) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "%lldx%lldx%lldx%lld", (long long) t->ne[0], (long long) t->ne[1],
                  (long long) t->ne[2], (long long) t->ne[3]);
    return buf;
}

// What a backend's supports_op looks at beyond the op and the types, per op (the audit's conditions).
std::string details(const ggml_tensor * t) {
    const int32_t * p = (const int32_t *) t->op_params;
    char buf[160];
    buf[0] = 0;
    switch (t->op) {
        case GGML_OP_MUL_MAT:
            std::snprintf(buf, sizeof(buf), "broadcast dim 2 %s, ne3 %s", t->src[0]->ne[2] != t->src[1]->ne[2] ? "yes" : "no",
                          t->src[0]->ne[3] == t->src[1]->ne[3] ? "equal" : "differs");
            break;
        case GGML_OP_FLASH_ATTN_EXT:
            std::snprintf(buf, sizeof(buf), "D_k %lld, D_v %lld, mask %s, sinks %s, gqa %lld", (long long) t->src[1]->ne[0],
                          (long long) t->src[2]->ne[0], t->src[3] ? ggml_type_name(t->src[3]->type) : "none",
                          t->src[4] ? "yes" : "no", (long long) (t->src[0]->ne[2] / std::max<int64_t>(1, t->src[1]->ne[2])));
            break;
        case GGML_OP_PAD:
            std::snprintf(buf, sizeof(buf), "lp/rp %d/%d %d/%d %d/%d %d/%d, circular %d", p[0], p[1], p[2], p[3], p[4], p[5],
                          p[6], p[7], p[8]);
            break;
        case GGML_OP_CONV_2D_DW:
            std::snprintf(buf, sizeof(buf), "kernel %lldx%lld, stride %d/%d, pad %d/%d, dil %d/%d, input %s",
                          (long long) t->src[0]->ne[0], (long long) t->src[0]->ne[1], p[0], p[1], p[2], p[3], p[4], p[5],
                          ggml_is_contiguous(t->src[1]) ? "contig (WHCN)" : "noncontig");
            break;
        case GGML_OP_ROPE:
            std::snprintf(buf, sizeof(buf), "mode %d, n_dims %d", p[2], p[1]);
            break;
        case GGML_OP_CONCAT:
            std::snprintf(buf, sizeof(buf), "dim %d", p[0]);
            break;
        case GGML_OP_SOFT_MAX:
            std::snprintf(buf, sizeof(buf), "mask %s, sinks %s", t->src[1] ? ggml_type_name(t->src[1]->type) : "none",
                          t->src[2] ? "yes" : "no");
            break;
        case GGML_OP_GLU:
            std::snprintf(buf, sizeof(buf), "%s, swapped %d", t->src[1] ? "split" : "fused", p[1]);
            break;
        default:
            break;
    }
    return buf;
}

// The memory layout of a tensor as the backends' supports_op test it: "c" (ggml_is_contiguous, which
// implies the rest), else those of c1 (ggml_is_contiguous_1), c2 (_2), r (ggml_is_contiguous_rows),
// d01 (dims 0 and 1 packed: ggml-vulkan's ggml_vk_dim01_contiguous), t (ggml_is_transposed) that
// hold, or "-" for none.
std::string layout_of(const ggml_tensor * t) {
    if (ggml_is_contiguous(t)) return "c";
    std::string s;
    auto add = [&](bool on, const char * f) {
        if (!on) return;
        if (!s.empty()) s += "+";
        s += f;
    };
    const bool d01 = t->nb[0] == ggml_type_size(t->type) &&
                     t->nb[1] == (t->nb[0] * t->ne[0]) / ggml_blck_size(t->type) &&
                     (t->ne[3] == 1 || t->nb[3] == t->nb[2] * t->ne[2]);
    add(ggml_is_contiguous_1(t), "c1");
    add(ggml_is_contiguous_2(t), "c2");
    add(ggml_is_contiguous_rows(t), "r");
    add(d01, "d01");
    add(ggml_is_transposed(t), "t");
    return s.empty() ? "-" : s;
}

// "dst <layout> src0 <layout> ..." (empty source slots left out)
std::string layout(const ggml_tensor * t) {
    std::string s = "dst " + layout_of(t);
    for (int j = 0; j < GGML_MAX_SRC; ++j) {
        if (t->src[j]) s += " src" + std::to_string(j) + " " + layout_of(t->src[j]);
    }
    return s;
}

// One recorded (graph, op, dst type, src types) and what was seen of it.
struct op_record {
    int64_t count = 0;
    std::string example;                 // dst shape <- src shapes, the first node seen
    std::set<std::string> details;       // details() of the nodes (at most 16 kept)
    std::set<std::string> layouts;       // layout() of the nodes
    std::set<std::string> backends;      // buffer types of the dst tensors
};

using op_key = std::tuple<std::string, std::string, std::string, std::vector<std::string>>;

class op_recorder {
public:
    struct tag {
        op_recorder * self;
        const char * graph;
    };
    tag encoder{this, "encoder"}, llm{this, "llm"};

    static bool callback(ggml_tensor * t, bool ask, void * user_data) {
        if (!ask) return true;
        const tag * g = (const tag *) user_data;
        g->self->record(g->graph, t);
        return false;  // nothing to read back: the split runs whole
    }

    void record(const char * graph, const ggml_tensor * t) {
        std::vector<std::string> srcs;
        std::string example = shape_str(t) + " <-";
        for (int j = 0; j < GGML_MAX_SRC; ++j) {
            if (!t->src[j]) continue;
            // the position matters (e.g. FLASH_ATTN_EXT's mask is src 3): keep gaps as "-"
            while ((int) srcs.size() < j) srcs.push_back("-");
            srcs.push_back(ggml_type_name(t->src[j]->type));
            example += " " + shape_str(t->src[j]);
        }
        std::lock_guard<std::mutex> lock(mu_);
        op_record & r = ops_[op_key{graph, ggml_op_desc(t), ggml_type_name(t->type), srcs}];
        if (r.count++ == 0) r.example = example;
        const std::string d = details(t);
        if (!d.empty() && r.details.size() < 16) r.details.insert(d);
        r.layouts.insert(layout(t));
        const ggml_tensor * base = t->view_src ? t->view_src : t;
        r.backends.insert(base->buffer ? ggml_backend_buffer_name(base->buffer) : "none");
    }

    py::list to_list() const {
        std::lock_guard<std::mutex> lock(mu_);
        py::list out;
        for (const auto & kv : ops_) {
            const op_key & k = kv.first;
            const op_record & r = kv.second;
            py::dict d;
            d["graph"] = std::get<0>(k);
            d["op"] = std::get<1>(k);
            d["type"] = std::get<2>(k);
            d["srcs"] = py::tuple(py::cast(std::get<3>(k)));
            d["count"] = r.count;
            d["example"] = r.example;
            d["details"] = std::vector<std::string>(r.details.begin(), r.details.end());
            d["layouts"] = std::vector<std::string>(r.layouts.begin(), r.layouts.end());
            d["backends"] = std::vector<std::string>(r.backends.begin(), r.backends.end());
            out.append(d);
        }
        return out;
    }

private:
    mutable std::mutex mu_;
    std::map<op_key, op_record> ops_;
};

// Loads the engine as funasr::Transcriber does (with both eval callbacks), runs the jobs, returns
// the ops. jobs: a list of (samples, dict of funasr::Request fields: prompt, max_new_tokens,
// draft_max, ignore_eos, draft, ctc, ctc_draft, ctc_only).
py::list record_ops(const py::object & llm, const py::object & mmproj, const py::list & jobs, const std::string & device,
                    int n_threads, int n_gpu_layers, bool use_gpu, int n_ctx, int n_batch, const std::string & flash_attn,
                    const std::string & kv_type, int n_parallel) {
    const std::string llm_path = funasr_py::fspath(llm), mmproj_path = funasr_py::fspath(mmproj);
    std::vector<std::pair<std::vector<float>, funasr::Request>> todo;
    for (const py::handle & item : jobs) {
        const py::tuple job = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
        if (job.size() != 2) throw funasr::error(funasr::errc::invalid_argument, "a job is (samples, request dict)");
        const py::dict req = job[1].cast<py::dict>();
        funasr::Request r;
        r.prompt = req.contains("prompt") ? req["prompt"].cast<std::string>() : std::string();
        r.max_new_tokens = req.contains("max_new_tokens") ? req["max_new_tokens"].cast<int>() : 8;
        r.draft_max = req.contains("draft_max") ? req["draft_max"].cast<int>() : 0;
        r.ignore_eos = req.contains("ignore_eos") && req["ignore_eos"].cast<bool>();
        r.ctc = req.contains("ctc") && req["ctc"].cast<bool>();
        r.ctc_draft = req.contains("ctc_draft") && req["ctc_draft"].cast<bool>();
        r.ctc_only = req.contains("ctc_only") && req["ctc_only"].cast<bool>();
        if (req.contains("draft")) r.draft = req["draft"].cast<std::vector<llama_token>>();
        todo.emplace_back(funasr_py::float_samples(job[0], "samples"), std::move(r));
    }
    op_recorder rec;
    {
        py::gil_scoped_release nogil;
        // as funasr::Transcriber::Transcriber (engine/transcriber.cpp), plus cb_eval
        funasr::llama_handles h("AsrModel", llm_path, device, n_gpu_layers);
        llama_context_params cparams =
            funasr::llama_handles::context_params({n_threads, n_gpu_layers, n_ctx, n_batch, flash_attn, kv_type, device});
        mtmd_context_params mcp = mtmd_context_params_default();
        const bool on_device = use_gpu && !funasr::is_cpu_device(h.device());
        mcp.use_gpu = on_device;
        mcp.device = on_device ? h.device() : nullptr;
        mcp.print_timings = false;
        mcp.n_threads = cparams.n_threads;
        mcp.flash_attn_type = cparams.flash_attn_type;
        mcp.cb_eval = &op_recorder::callback;
        mcp.cb_eval_user_data = &rec.encoder;
        h.attach_mtmd(mmproj_path, mcp);
        std::unique_ptr<funasr::CtcHead> ctc = funasr::CtcHead::load(mmproj_path);
        const bool auto_ctx = n_ctx == 0;
        cparams.n_ctx = auto_ctx ? 1024 : (uint32_t) n_ctx;
        cparams.n_ubatch = std::min<uint32_t>(cparams.n_batch, 128);
        cparams.n_seq_max = (uint32_t) n_parallel + 1;
        cparams.kv_unified = true;
        cparams.cb_eval = &op_recorder::callback;
        cparams.cb_eval_user_data = &rec.llm;
        h.create_context(cparams);
        funasr::Engine engine(h, cparams, n_parallel, auto_ctx, ctc.get());
        std::vector<std::shared_ptr<funasr::Job>> submitted;
        for (auto & job : todo) submitted.push_back(engine.submit(std::move(job.first), std::move(job.second)));
        for (const auto & job : submitted) {
            engine.wait(job);
            if (job->failed) throw funasr::error(job->error_code, job->error);
        }
    }
    return rec.to_list();
}

}  // namespace

void register_testing_ops(py::module_ & m) {
    m.def("record_ops", &record_ops, py::arg("llm"), py::arg("mmproj"), py::arg("jobs"), py::kw_only(),
          py::arg("device") = "cpu", py::arg("n_threads") = 1, py::arg("n_gpu_layers") = -1, py::arg("use_gpu") = true,
          py::arg("n_ctx") = 0, py::arg("n_batch") = 512, py::arg("flash_attn") = "auto", py::arg("kv_type") = "f16",
          py::arg("n_parallel") = 2,
          "Runs jobs [(samples, {prompt, max_new_tokens, draft_max, ignore_eos, draft, ctc, ctc_draft, ctc_only})]\n"
          "on the engine loaded as funasr::Transcriber loads it (device: as Model(device=...)), with a\n"
          "ggml_backend_sched eval callback on the mmproj's graph ('encoder': encoder, adaptor, CTC head) and the\n"
          "LLM's ('llm'). Returns one dict per (graph, op, type, srcs): op (ggml_op_desc: UNARY/GLU as their\n"
          "sub-op), type (dst), srcs (types by position, '-' for an empty slot), count, example (shapes), details\n"
          "(op parameters that supports_op conditions look at), layouts (contiguity flags of dst and sources, see\n"
          "layout_of), backends (the dst buffers' types). A job that fails raises its error.");
}
