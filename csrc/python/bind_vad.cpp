// funasr_cpp._core.VadModel and VadStream: the FSMN-VAD of csrc/vad/ (fsmn_vad.cpp, vad_stream.cpp) for
// Python (funasr_cpp.vad drives them).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "vad/fsmn_vad.h"
#include "vad/vad_stream.h"
#include "python/native.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace py = pybind11;
using funasr::errc;

namespace {

double number(const py::handle & v, const std::string & key) {
    if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v))) {
        throw funasr::error(errc::wrong_type, "VAD option " + key + " must be a number, not " +
                                                std::string(py::str(py::type::of(v).attr("__name__"))));
    }
    const double x = v.cast<double>();
    if (std::isnan(x)) throw funasr::error(errc::invalid_argument, "VAD option " + key + " is NaN");
    return x;
}

// options = the checkpoint's, with the given ones changed (names as in funasr_vad::options)
funasr_vad::options make_options(const funasr_vad::model_info & info, const py::dict & given) {
    funasr_vad::options o = info.defaults;
    for (auto item : given) {
        const std::string k = py::str(item.first);
        const py::handle v = item.second;
        if (k == "sil_pdf_ids") {
            o.sil_pdf_ids.clear();
            for (auto id : v) o.sil_pdf_ids.push_back((int) number(id, k));
        } else if (k == "silence_schedule") {
            o.silence_schedule.clear();
            for (auto pair : v) {
                auto t = py::reinterpret_borrow<py::sequence>(pair);
                if (py::len(t) != 2) throw funasr::error(errc::invalid_argument, "silence_schedule entries are (speech_ms, silence_ms) pairs");
                o.silence_schedule.emplace_back(number(t[0], k), number(t[1], k));
            }
        } else if (k == "dynamic_silence" || k == "do_extend") {
            (k == "dynamic_silence" ? o.dynamic_silence : o.do_extend) = PyObject_IsTrue(v.ptr()) == 1;
        } else if (k == "detect_mode") {
            o.detect_mode = (int) number(v, k);
        } else if (k == "noise_frame_num_used_for_snr") {
            o.noise_frame_num_used_for_snr = (int) number(v, k);
        } else if (k == "chunk_size_ms") {  // inference()'s, not the checkpoint's
            o.chunk_size_ms = number(v, k);
        } else {
            const auto & list = funasr_vad::number_options();
            auto it = std::find_if(list.begin(), list.end(), [&](const auto & n) { return k == n.name; });
            if (it == list.end()) throw funasr::error(errc::wrong_type, "unknown VAD option " + k);
            o.*(it->field) = number(v, k);
        }
    }
    const std::string bad = funasr_vad::check_options(o, info);
    if (!bad.empty()) throw funasr::error(errc::invalid_argument, "VAD options: " + bad);
    return o;
}

py::dict options_dict(const funasr_vad::options & o) {
    py::dict d;
    d["detect_mode"] = o.detect_mode;
    for (const auto & n : funasr_vad::number_options()) d[n.name] = o.*(n.field);
    d["do_extend"] = o.do_extend;
    d["noise_frame_num_used_for_snr"] = o.noise_frame_num_used_for_snr;
    d["sil_pdf_ids"] = o.sil_pdf_ids;
    d["frame_in_ms"] = o.frame_in_ms;
    return d;
}

// samples without a copy when they are already 1-D C-contiguous float32 (an hour is 230 MB),
// else converted by float_samples; `keep` holds what `data` points into
struct samples_view {
    py::object keep;
    std::vector<float> copy;
    const float * data = nullptr;
    size_t size = 0;
};

samples_view view_samples(const py::object & obj) {
    samples_view v;
    if (py::isinstance<py::array>(obj)) {
        auto a = py::reinterpret_borrow<py::array>(obj);
        if (a.ndim() == 1 && a.dtype().is(py::dtype::of<float>()) && (a.flags() & py::array::c_style)) {
            v.keep = obj;
            v.data = static_cast<const float *>(a.data());
            v.size = (size_t) a.shape(0);
            return v;
        }
    }
    v.copy = funasr_py::float_samples(obj, "samples");
    v.data = v.copy.data();
    v.size = v.copy.size();
    return v;
}

py::list segment_list(const std::vector<funasr_vad::segment> & segs) {
    py::list out;
    for (const auto & s : segs) out.append(py::make_tuple(s.start_ms, s.end_ms));
    return out;
}

// the model and the lock its calls take turns on, shared by the VadModel and its streams
struct shared_model {
    std::unique_ptr<funasr_vad::model> model;
    std::mutex mu;
};

// A streaming session on a VadModel: upstream's generate(chunk, cache, is_final, chunk_size) call by call.
class VadStream {
public:
    VadStream(std::shared_ptr<shared_model> m, const funasr_vad::options & o) : m_(std::move(m)) {
        std::lock_guard<std::mutex> lock(m_->mu);
        try {
            s_ = std::make_unique<funasr_vad::stream>(*m_->model, o);
        } catch (const std::invalid_argument & e) {
            throw funasr::error(errc::invalid_argument, std::string("VAD options: ") + e.what());
        }
    }

    py::list feed(const py::object & samples_obj, bool final) {
        if (s_->finished()) {
            throw funasr::error(errc::invalid_argument, "the VAD stream has ended: a chunk was fed with final=True");
        }
        const samples_view x = view_samples(samples_obj);
        std::vector<funasr_vad::segment> out;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(m_->mu);
            s_->feed(x.data, x.size, final, out);
        }
        return segment_list(out);
    }

    bool finished() const { return s_->finished(); }
    int64_t samples_fed() const { return s_->samples_fed(); }
    size_t state_bytes() const { return s_->state_bytes(); }

private:
    std::shared_ptr<shared_model> m_;
    std::unique_ptr<funasr_vad::stream> s_;
};

class VadModel {
public:
    VadModel(const py::object & path_obj, int n_threads) {
        const std::string path = funasr_py::fspath(path_obj);
        funasr::check_gguf_file(path);
        const int32_t threads = funasr::thread_count(n_threads);
        try {
            py::gil_scoped_release nogil;
            m_->model = std::make_unique<funasr_vad::model>(path, threads);
        } catch (const std::runtime_error & e) {
            throw funasr::error(errc::invalid_argument, e.what());
        }
        path_ = path;
    }

    py::dict info() const {
        const auto & I = m_->model->info();
        py::dict d;
        d["path"] = path_;
        d["sample_rate"] = I.frontend.sample_rate;
        d["n_mels"] = I.frontend.n_mels;
        d["lfr_m"] = I.frontend.lfr_m;
        d["frame_shift"] = I.frontend.frame_shift;
        d["frame_length"] = I.frontend.frame_length;
        d["n_pdfs"] = I.output_dim;
        d["fsmn_layers"] = I.fsmn_layers;
        d["lorder"] = I.lorder;
        d["rorder"] = I.rorder;
        d["options"] = options_dict(I.defaults);
        return d;
    }

    py::list segments(const py::object & samples_obj, const py::dict & opts) {
        const funasr_vad::options o = make_options(m_->model->info(), opts);
        const samples_view x = view_samples(samples_obj);
        std::vector<funasr_vad::segment> segs;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(m_->mu);
            segs = m_->model->segments(x.data, x.size, o);
        }
        return segment_list(segs);
    }

    // every forward call's posteriors and decibels, as upstream computes them: [(first frame, posteriors [T, n_pdfs], decibels [T])]
    py::list chunks(const py::object & samples_obj, double chunk_size_ms) {
        if (!(chunk_size_ms >= 15000)) throw funasr::error(errc::invalid_argument, "chunk_size_ms must be at least 15000");
        const std::vector<float> x = funasr_py::float_samples(samples_obj, "samples");
        struct chunk {
            int64_t first;
            std::vector<float> post, db;
        };
        std::vector<chunk> got;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(m_->mu);
            m_->model->run(x.data(), x.size(), chunk_size_ms, nullptr,
                        [&](int64_t first, int64_t T, const float * post, const float * db, bool) {
                            got.push_back({first, std::vector<float>(post, post + T * m_->model->info().output_dim),
                                           std::vector<float>(db, db + T)});
                        });
        }
        py::list out;
        const int D = m_->model->info().output_dim;
        for (const auto & c : got) {
            const py::ssize_t T = (py::ssize_t) c.db.size();
            py::array_t<float> post({T, (py::ssize_t) D});
            py::array_t<float> db(T);
            if (T) {
                std::memcpy(post.mutable_data(), c.post.data(), c.post.size() * sizeof(float));
                std::memcpy(db.mutable_data(), c.db.data(), c.db.size() * sizeof(float));
            }
            out.append(py::make_tuple(c.first, post, db));
        }
        return out;
    }

    // the decision logic alone on given posteriors: chunks = [(posteriors [T, n_pdfs], decibels [T])], the last final
    py::list decide(const py::list & chunks, const py::dict & opts) {
        const funasr_vad::options o = make_options(m_->model->info(), opts);
        const int D = m_->model->info().output_dim;
        std::vector<std::pair<std::vector<float>, std::vector<float>>> data;
        for (auto c : chunks) {
            auto t = py::reinterpret_borrow<py::sequence>(c);
            auto post = py::array_t<float, py::array::c_style | py::array::forcecast>(t[0]);
            auto db = py::array_t<float, py::array::c_style | py::array::forcecast>(t[1]);
            if (post.ndim() != 2 || post.shape(1) != D || db.ndim() != 1 || db.shape(0) != post.shape(0)) {
                throw funasr::error(errc::invalid_argument, "decide: each chunk is (posteriors [T, n_pdfs], decibels [T])");
            }
            data.emplace_back(std::vector<float>(post.data(), post.data() + post.size()),
                              std::vector<float>(db.data(), db.data() + db.size()));
        }
        funasr_vad::segmenter seg(o);
        std::vector<funasr_vad::segment> out;
        for (size_t i = 0; i < data.size(); ++i) {
            seg.begin_chunk(o.chunk_size_ms);
            seg.chunk(data[i].first.data(), D, data[i].second.data(), (int64_t) data[i].second.size(),
                      i + 1 == data.size(), out);
        }
        return segment_list(out);
    }

    int64_t n_frames(size_t n_samples) const { return m_->model->n_frames(n_samples); }

    std::unique_ptr<VadStream> stream(const py::dict & opts) {
        return std::make_unique<VadStream>(m_, make_options(m_->model->info(), opts));
    }

private:
    std::shared_ptr<shared_model> m_ = std::make_shared<shared_model>();
    std::string path_;
};

}  // namespace

void register_vad(py::module_ & m) {
    py::class_<VadModel>(m, "VadModel",
                         "FSMN-VAD from an fsmn_vad GGUF (funasr_cpp/converters/vad_gguf.py): upstream's offline\n"
                         "FsmnVADStreaming.inference on 16 kHz mono float samples.")
        .def(py::init<const py::object &, int>(), py::arg("path"), py::kw_only(), py::arg("n_threads"))
        .def_property_readonly("info", &VadModel::info, "frontend and encoder sizes, and the checkpoint's options")
        .def("segments", &VadModel::segments, py::arg("samples"), py::arg("options") = py::dict(),
             "[(start_ms, end_ms)] as upstream's inference returns them; options change the checkpoint's")
        .def("chunks", &VadModel::chunks, py::arg("samples"), py::kw_only(), py::arg("chunk_size_ms") = 60000.0,
             "[(first frame, posteriors [T, n_pdfs], decibels [T])] for every forward call")
        .def("decide", &VadModel::decide, py::arg("chunks"), py::arg("options") = py::dict(),
             "segments from given [(posteriors, decibels)] chunks (the decision logic alone)")
        .def("n_frames", &VadModel::n_frames, py::arg("n_samples"))
        .def("stream", &VadModel::stream, py::arg("options") = py::dict(),
             "a streaming session with these options (the model is shared; calls take turns)");
    py::class_<VadStream>(m, "VadStream",
                          "upstream's streaming FSMN-VAD: generate(chunk, cache, is_final, chunk_size) call by call")
        .def("feed", &VadStream::feed, py::arg("samples"), py::kw_only(), py::arg("final") = false,
             "[(start_ms | -1, end_ms | -1)] as upstream returns them for this chunk")
        .def_property_readonly("finished", &VadStream::finished)
        .def_property_readonly("samples_fed", &VadStream::samples_fed)
        .def_property_readonly("state_bytes", &VadStream::state_bytes, "bytes the session holds");
}
