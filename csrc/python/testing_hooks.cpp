// funasr_cpp._testing (its module: testing_module.cpp): hooks into single steps of the pipeline for the parity tests and the
// benchmarks; the product path (funasr_cpp.Model) goes through AsrModel only.
//   frontend_features / frontend_mtmd_chunks  the fbank + LFR frontend (csrc/frontend/frontend.cpp)
//   AudioEncoder                              the mmproj's encoder + adaptor through clip
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "clip-impl.h"
#include "clip.h"
#include "model/funasr.h"
#include "python/native.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

py::array_t<float> rows_array(const std::vector<float> & data, int64_t width) {
    py::array_t<float> out({(py::ssize_t) ((int64_t) data.size() / width), (py::ssize_t) width});
    if (!data.empty()) std::memcpy(out.mutable_data(), data.data(), data.size() * sizeof(float));
    return out;
}

// ----------------------------------------------------------------------------- frontend
// Fun-ASR-Nano's frontend (its config.yaml: LFR 7/6; the rest are WavFrontend's defaults)
funasr_frontend_params nano_frontend_params() {
    funasr_frontend_params p;
    p.lfr_m = 7;
    p.lfr_n = 6;
    return p;
}

const funasr_frontend & default_frontend() {
    static const funasr_frontend fe{nano_frontend_params()};
    return fe;
}

py::array_t<float> frontend_features(const py::object & samples_obj, const py::object & cmvn_shift,
                                     const py::object & cmvn_scale) {
    const std::vector<float> samples = funasr_py::float_samples(samples_obj, "samples");
    if (cmvn_shift.is_none() != cmvn_scale.is_none()) {
        throw funasr::error(funasr::errc::invalid_argument, "cmvn_shift and cmvn_scale must be given together");
    }
    std::unique_ptr<funasr_frontend> own;
    const funasr_frontend * fe = &default_frontend();
    if (!cmvn_shift.is_none()) {
        funasr_frontend_params p = nano_frontend_params();
        p.cmvn_shift = funasr_py::float_samples(cmvn_shift, "cmvn_shift");
        p.cmvn_scale = funasr_py::float_samples(cmvn_scale, "cmvn_scale");
        try {
            own = std::make_unique<funasr_frontend>(p);
        } catch (const std::invalid_argument & e) {
            throw funasr::error(funasr::errc::invalid_argument, e.what());
        }
        fe = own.get();
    }
    std::vector<float> feats;
    {
        py::gil_scoped_release nogil;
        fe->compute(samples.data(), samples.size(), feats);
    }
    return rows_array(feats, fe->feature_dim());
}

py::list frontend_mtmd_chunks(const py::object & samples_obj, int chunk_seconds) {
    const std::vector<float> samples = funasr_py::float_samples(samples_obj, "samples");
    std::vector<mtmd_audio_mel> chunks;
    bool ok;
    {
        py::gil_scoped_release nogil;
        ok = funasr_audio_to_mel_chunks(default_frontend(), chunk_seconds, samples.data(), samples.size(), chunks);
    }
    if (!ok) throw funasr::error(funasr::errc::runtime, "funasr: audio preprocessing failed");
    py::list out;
    for (const auto & c : chunks) {
        py::array_t<float> a({(py::ssize_t) c.n_mel, (py::ssize_t) c.n_len});
        std::memcpy(a.mutable_data(), c.data.data(), c.data.size() * sizeof(float));
        out.append(std::move(a));
    }
    return out;
}

// ----------------------------------------------------------------------------- encoder
class AudioEncoder {
public:
    AudioEncoder(const py::object & path_obj, int n_threads, bool use_gpu, const std::string & flash_attn,
                 const std::string & device)
        : path_(funasr_py::fspath(path_obj)), n_threads_(funasr_py::thread_count(n_threads)) {
        const llama_flash_attn_type fa = funasr_py::parse_flash_attn(flash_attn);
        // as funasr::Transcriber places the mmproj: on the device, or on the CPU
        ggml_backend_dev_t dev = funasr::resolve_device(device);
        if (!use_gpu || funasr::is_cpu_device(dev)) dev = nullptr;
        device_ = dev ? funasr::device_name(dev) : "cpu";
        try {
            funasr_py::check_gguf_file(path_);
        } catch (const funasr::error & e) {
            if (e.code() != funasr::errc::invalid_argument) throw;
            throw funasr::error(funasr::errc::invalid_argument, "cannot load the audio encoder of mmproj " + path_ + ": " + e.what());
        }
        clip_context_params p{};
        p.use_gpu = dev != nullptr;
        p.device = dev;
        p.flash_attn_type = fa == LLAMA_FLASH_ATTN_TYPE_AUTO      ? CLIP_FLASH_ATTN_TYPE_AUTO
                            : fa == LLAMA_FLASH_ATTN_TYPE_ENABLED ? CLIP_FLASH_ATTN_TYPE_ENABLED
                                                                  : CLIP_FLASH_ATTN_TYPE_DISABLED;
        p.image_min_tokens = -1;
        p.image_max_tokens = -1;
        p.warmup = true;
        {
            py::gil_scoped_release nogil;
            funasr_py::log_capture cap;
            clip_init_result res = clip_init(path_.c_str(), p);
            if (res.ctx_v) clip_free(res.ctx_v);
            if (!res.ctx_a) throw funasr::error(funasr::errc::invalid_argument, "cannot load the audio encoder of mmproj " + path_);
            ctx_.reset(res.ctx_a);
        }
        const auto & hp = *clip_get_hparams(ctx_.get());
        if (!clip_has_audio_encoder(ctx_.get()) || hp.funasr.enc_blocks == 0) {
            throw funasr::error(funasr::errc::invalid_argument, path_ + " is not a funasr mmproj");
        }
        n_mel_ = hp.n_mel_bins;
        lfr_m_ = hp.funasr.frontend.lfr_m;
        frontend_ = std::make_unique<funasr_frontend>(hp.funasr.frontend);
    }

    // the LFR features this mmproj's frontend computes from 16 kHz mono samples: [T, n_mel * lfr_m]
    py::array_t<float> features(const py::object & samples_obj) {
        const std::vector<float> samples = funasr_py::float_samples(samples_obj, "samples");
        std::vector<float> feats;
        {
            py::gil_scoped_release nogil;
            frontend_->compute(samples.data(), samples.size(), feats);
        }
        return rows_array(feats, frontend_->feature_dim());
    }

    // what funasr_load_hparams read from the mmproj (key defaults applied)
    py::dict hparams() const {
        const auto & hp = *clip_get_hparams(ctx_.get());
        const auto & f = hp.funasr;
        const auto & fe = f.frontend;
        py::dict d;
        d["sample_rate"] = fe.sample_rate;
        d["n_mels"] = fe.n_mels;
        d["frame_length"] = fe.frame_length;
        d["frame_shift"] = fe.frame_shift;
        d["n_fft"] = hp.audio_n_fft;
        d["window"] = fe.window;
        d["lfr_m"] = fe.lfr_m;
        d["lfr_n"] = fe.lfr_n;
        d["preemphasis"] = fe.preemph;
        d["low_freq"] = fe.low_freq;
        d["high_freq"] = fe.high_freq;
        d["input_scale"] = fe.input_scale;
        d["has_cmvn"] = !fe.cmvn_shift.empty();
        d["num_blocks"] = f.enc_blocks;
        d["tp_blocks"] = f.enc_tp_blocks;
        d["sanm_shift"] = f.sanm_shift;
        d["encoder_input_scale"] = f.enc_input_scale;
        d["kernel_size"] = hp.audio_conv_kernel_size;
        d["adaptor_blocks"] = f.adaptor_blocks;
        d["adaptor_heads"] = f.adaptor_heads;
        d["adaptor_eps"] = f.adaptor_eps;
        d["downsample_rate"] = f.downsample_rate;
        d["use_low_frame_rate"] = f.use_low_frame_rate;
        return d;
    }

    // feats: LFR rows [T, n_mel * lfr_m] -> the audio rows the LLM sees [n_tokens, n_embd]
    py::array_t<float> encode(const py::array_t<float, py::array::c_style | py::array::forcecast> & feats) {
        if (feats.ndim() != 2 || feats.shape(1) != (py::ssize_t) n_mel_ * lfr_m_) {
            throw funasr::error(funasr::errc::invalid_argument, "features must be [T, " + std::to_string(n_mel_ * lfr_m_) + "]");
        }
        const int64_t t = feats.shape(0);
        if (t == 0) throw funasr::error(funasr::errc::invalid_argument, "no frames to encode");
        mtmd_audio_mel mel = funasr_mtmd_mel(feats.data(), t, n_mel_, lfr_m_);  // as the preprocessor emits it
        clip_image_f32 img;
        img.set_size({(int) mel.n_len, (int) mel.n_mel}, false, true);  // clip sizes are int
        img.cpy_buf(mel.data);
        const int n_embd = clip_n_mmproj_embd(ctx_.get());
        std::vector<float> out;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mutex_);
            funasr_py::log_capture cap;
            const int n_tok = clip_n_output_tokens(ctx_.get(), &img);
            out.resize((size_t) n_tok * n_embd);  // clip_encode copies into the caller's buffer
            clip_image_f32_batch batch;
            batch.is_audio = true;
            batch.entries.push_back(std::move(img));
            if (!clip_image_batch_encode(ctx_.get(), n_threads_, &batch, out)) {
                throw funasr::error(funasr::errc::runtime, "the audio encoder of " + path_ + " failed");
            }
        }
        return rows_array(out, n_embd);
    }

    int n_embd() const { return clip_n_mmproj_embd(ctx_.get()); }
    const std::string & device() const { return device_; }
    int n_tokens(int64_t n_frames) const {
        clip_image_f32 img;
        img.set_size({(int) (n_frames * lfr_m_), n_mel_}, true, true);
        return clip_n_output_tokens(ctx_.get(), &img);
    }

private:
    struct ctx_deleter { void operator()(clip_ctx * c) const { clip_free(c); } };
    std::string path_, device_;
    std::unique_ptr<clip_ctx, ctx_deleter> ctx_;
    std::unique_ptr<funasr_frontend> frontend_;
    std::mutex mutex_;
    int n_threads_;
    int n_mel_ = 0;
    int lfr_m_ = 0;
};

}  // namespace

void register_testing_bindings(py::module_ & m) {
    m.def("frontend_features", &frontend_features, py::arg("samples"), py::kw_only(), py::arg("cmvn_shift") = py::none(),
          py::arg("cmvn_scale") = py::none(),
          "funasr WavFrontend features of 16 kHz mono float samples in [-1, 1]: Kaldi fbank (80 bins, 25/10 ms,\n"
          "hamming, no dither, snip_edges) -> LFR 7/6 -> optional CMVN (x + shift) * scale.\n"
          "Returns float32 [T_lfr, 560]; empty (0, 560) for fewer than 400 samples.");
    m.def("frontend_mtmd_chunks", &frontend_mtmd_chunks, py::arg("samples"), py::kw_only(), py::arg("chunk_seconds") = 30,
          "What the mtmd funasr preprocessor emits: one float32 [80, 7 * T_lfr] array per chunk of at most\n"
          "chunk_seconds seconds (<= 0: one chunk); column 7 i + j is sub-frame j of LFR row i. Chunks with\n"
          "no frame (fewer than 400 samples) are left out.");
    py::class_<AudioEncoder>(m, "AudioEncoder",
        "The funasr mmproj's encoder + adaptor (clip): LFR features [T, n_mel * lfr_m] -> audio rows [n, n_embd].")
        .def(py::init<const py::object &, int, bool, const std::string &, const std::string &>(), py::arg("path"),
             py::kw_only(), py::arg("n_threads") = 0, py::arg("use_gpu") = true, py::arg("flash_attn") = "auto",
             py::arg("device") = "auto",
             "device: as AsrModel's ('auto', 'cpu', 'vulkan0', ...); use_gpu=False or a CPU device: the CPU.")
        .def("encode", &AudioEncoder::encode, py::arg("features"))
        .def("features", &AudioEncoder::features, py::arg("samples"),
             "LFR features of 16 kHz mono samples in [-1, 1], computed as this mmproj's frontend keys say.")
        .def_property_readonly("hparams", &AudioEncoder::hparams)
        .def("n_tokens", &AudioEncoder::n_tokens, py::arg("n_frames"),
             "Audio rows the LLM sees for n_frames LFR frames (use_low_frame_rate / downsample_rate rule).")
        .def_property_readonly("n_embd", &AudioEncoder::n_embd)
        .def_property_readonly("device", &AudioEncoder::device, "the device the graphs run on ('cpu', 'vulkan0', ...)");
}
