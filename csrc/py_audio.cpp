// funasr_cpp._core bindings of the funasr audio side (frontend, encoder).
#include "funasr.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <vector>

namespace py = pybind11;

namespace {

using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// 1-D float waveform (float32, or float64 cast to float32); integer PCM is refused
// because it would need a different scale than [-1, 1] floats
f32_array as_waveform(const py::object & o, const char * what) {
    const py::array a = py::array::ensure(o);
    if (!a) {
        throw py::type_error(std::string(what) + " must be a 1-D float array");
    }
    if (a.ndim() != 1) {
        throw py::value_error(std::string(what) + " must be a 1-D array, got " + std::to_string(a.ndim()) +
                              " dimensions");
    }
    if (a.dtype().kind() != 'f') {
        throw py::type_error(std::string(what) + " must be a float array (mono samples in [-1, 1])");
    }
    return f32_array::ensure(a);
}

std::vector<float> as_vector(const py::object & o, const char * what) {
    const py::array a = py::array::ensure(o);
    if (!a || a.ndim() != 1) {
        throw py::value_error(std::string(what) + " must be a 1-D array");
    }
    const f32_array f = f32_array::ensure(a);
    return std::vector<float>(f.data(), f.data() + f.size());
}

const funasr_frontend & default_frontend() {
    static const funasr_frontend fe{funasr_frontend_params{}};
    return fe;
}

py::array_t<float> funasr_features(const py::object & samples_in, const py::object & cmvn_shift,
                                   const py::object & cmvn_scale) {
    const f32_array samples = as_waveform(samples_in, "samples");
    if (cmvn_shift.is_none() != cmvn_scale.is_none()) {
        throw py::value_error("cmvn_shift and cmvn_scale must be given together");
    }
    std::unique_ptr<funasr_frontend> own;
    const funasr_frontend * fe = &default_frontend();
    if (!cmvn_shift.is_none()) {
        funasr_frontend_params p;
        p.cmvn_shift = as_vector(cmvn_shift, "cmvn_shift");
        p.cmvn_scale = as_vector(cmvn_scale, "cmvn_scale");
        own = std::make_unique<funasr_frontend>(p);  // std::invalid_argument -> ValueError
        fe = own.get();
    }

    std::vector<float> feats;
    {
        py::gil_scoped_release release;
        fe->compute(samples.data(), (size_t) samples.size(), feats);
    }
    const py::ssize_t dim = fe->feature_dim();
    py::array_t<float> out({(py::ssize_t) (feats.size() / dim), dim});
    if (!feats.empty()) {
        std::memcpy(out.mutable_data(), feats.data(), feats.size() * sizeof(float));
    }
    return out;
}

py::list funasr_mtmd_chunks(const py::object & samples_in, int chunk_seconds) {
    const f32_array samples = as_waveform(samples_in, "samples");

    const funasr_frontend & fe = default_frontend();  // Fun-ASR-Nano's
    std::vector<mtmd_audio_mel> chunks;
    bool ok;
    {
        py::gil_scoped_release release;
        ok = funasr_audio_to_mel_chunks(fe, chunk_seconds, samples.data(), (size_t) samples.size(), chunks);
    }
    if (!ok) {
        throw std::runtime_error("funasr: audio preprocessing failed");
    }
    py::list out;
    for (const auto & c : chunks) {
        py::array_t<float> a({(py::ssize_t) c.n_mel, (py::ssize_t) c.n_len});
        std::memcpy(a.mutable_data(), c.data.data(), c.data.size() * sizeof(float));
        out.append(std::move(a));
    }
    return out;
}

}  // namespace

void register_audio_bindings(py::module_ & m);

void register_audio_bindings(py::module_ & m) {
    m.def("funasr_features", &funasr_features, py::arg("samples"), py::kw_only(), py::arg("cmvn_shift") = py::none(),
          py::arg("cmvn_scale") = py::none(),
          "funasr WavFrontend features of 16 kHz mono float samples in [-1, 1]: Kaldi fbank (80 bins, 25/10 ms,\n"
          "hamming, no dither, snip_edges) -> LFR 7/6 -> optional CMVN (x + shift) * scale.\n"
          "Returns float32 [T_lfr, 560]; empty (0, 560) for fewer than 400 samples.");
    m.def("funasr_mtmd_chunks", &funasr_mtmd_chunks, py::arg("samples"), py::kw_only(), py::arg("chunk_seconds") = 30,
          "What the mtmd funasr preprocessor emits: one float32 [80, 7 * T_lfr] array per chunk of at most\n"
          "chunk_seconds seconds (<= 0: one chunk); column 7 i + j is sub-frame j of LFR row i. Chunks with\n"
          "no frame (fewer than 400 samples) are left out.");
}
