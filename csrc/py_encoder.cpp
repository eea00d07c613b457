// funasr_cpp._core.AudioEncoder: the funasr mmproj (encoder + adaptor) through clip, for
// parity tests and benchmarks: LFR features in, the audio rows the LLM would see out.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "clip-impl.h"
#include "clip.h"
#include "funasr.h"
#include "py_common.h"

#include <algorithm>
#include <fstream>
#include <memory>
#include <thread>
#include <mutex>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

class AudioEncoder {
public:
    AudioEncoder(const std::string & path, int n_threads, bool use_gpu, const std::string & flash_attn)
        : n_threads_(n_threads > 0 ? n_threads : (int) std::max(1u, std::thread::hardware_concurrency())) {
        clip_flash_attn_type fa = CLIP_FLASH_ATTN_TYPE_AUTO;
        if (flash_attn == "on") fa = CLIP_FLASH_ATTN_TYPE_ENABLED;
        else if (flash_attn == "off") fa = CLIP_FLASH_ATTN_TYPE_DISABLED;
        else if (flash_attn != "auto") throw py::value_error("flash_attn must be 'auto', 'on' or 'off'");
        if (!std::ifstream(path).good()) {
            PyErr_SetString(PyExc_FileNotFoundError, ("mmproj file not found: " + path).c_str());
            throw py::error_already_set();
        }
        clip_context_params p{};
        p.use_gpu = use_gpu;
        p.flash_attn_type = fa;
        p.image_min_tokens = -1;
        p.image_max_tokens = -1;
        p.warmup = true;
        clip_init_result res;
        std::string errors;
        {
            py::gil_scoped_release nogil;
            funasr_py::errors_begin();
            res = clip_init(path.c_str(), p);
            errors = funasr_py::errors_text();
        }
        if (res.ctx_v) clip_free(res.ctx_v);
        if (!res.ctx_a) {
            throw py::value_error("cannot load the audio encoder of mmproj " + path + (errors.empty() ? "" : ": " + errors));
        }
        ctx_.reset(res.ctx_a);
        const auto & hp = *clip_get_hparams(ctx_.get());
        if (!clip_has_audio_encoder(ctx_.get()) || hp.funasr.enc_blocks == 0) {
            throw py::value_error(path + " is not a funasr mmproj");
        }
        n_mel_ = hp.n_mel_bins;
        lfr_m_ = hp.funasr.lfr_m;
        frontend_ = std::make_unique<funasr_frontend>(funasr_frontend_params_from_hparams(hp));
    }

    // the LFR features this mmproj's frontend computes from 16 kHz mono samples: [T, n_mel * lfr_m]
    py::array_t<float> features(py::array_t<float, py::array::c_style | py::array::forcecast> samples) {
        if (samples.ndim() != 1) throw py::value_error("samples must be a 1-D array");
        std::vector<float> feats;
        {
            py::gil_scoped_release nogil;
            frontend_->compute(samples.data(), (size_t) samples.size(), feats);
        }
        const py::ssize_t dim = frontend_->feature_dim();
        py::array_t<float> out({(py::ssize_t) (feats.size() / dim), dim});
        std::copy(feats.begin(), feats.end(), out.mutable_data());
        return out;
    }

    // what funasr_load_hparams read from the mmproj (key defaults applied)
    py::dict hparams() const {
        const auto & hp = *clip_get_hparams(ctx_.get());
        const auto & f = hp.funasr;
        py::dict d;
        d["sample_rate"] = hp.audio_sample_rate;
        d["n_mels"] = hp.n_mel_bins;
        d["frame_length"] = hp.audio_window_len;
        d["frame_shift"] = hp.audio_hop_len;
        d["n_fft"] = hp.audio_n_fft;
        d["window"] = f.window;
        d["lfr_m"] = f.lfr_m;
        d["lfr_n"] = f.lfr_n;
        d["preemphasis"] = f.preemph;
        d["low_freq"] = f.low_freq;
        d["high_freq"] = f.high_freq;
        d["input_scale"] = f.input_scale;
        d["has_cmvn"] = !f.cmvn_shift.empty();
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

    // feats: [T, n_mel * lfr_m] LFR rows -> [n_tokens, n_embd]
    py::array_t<float> encode(py::array_t<float, py::array::c_style | py::array::forcecast> feats) {
        if (feats.ndim() != 2 || feats.shape(1) != (py::ssize_t) n_mel_ * lfr_m_) {
            throw py::value_error("features must be [T, " + std::to_string(n_mel_ * lfr_m_) + "]");
        }
        const int64_t t = feats.shape(0);
        if (t == 0) throw py::value_error("no frames to encode");
        const int64_t n_len = t * lfr_m_;
        clip_image_f32 img;
        img.set_size({(int) n_len, n_mel_}, false, true);
        std::vector<float> buf((size_t) n_len * n_mel_);
        const float * src = feats.data();
        for (int64_t i = 0; i < t; ++i) {           // mtmd layout: buf[mel * n_len + sub-frame]
            for (int j = 0; j < lfr_m_; ++j) {
                for (int m = 0; m < n_mel_; ++m) {
                    buf[(size_t) m * n_len + i * lfr_m_ + j] = src[i * n_mel_ * lfr_m_ + j * n_mel_ + m];
                }
            }
        }
        img.cpy_buf(buf);
        const int n_embd = clip_n_mmproj_embd(ctx_.get());
        std::vector<float> out;
        int n_tok = 0;
        bool ok;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mutex_);
            n_tok = clip_n_output_tokens(ctx_.get(), &img);
            out.resize((size_t) n_tok * n_embd);  // clip_encode copies into the caller's buffer
            clip_image_f32_batch batch;
            batch.is_audio = true;
            batch.entries.push_back(std::move(img));
            ok = clip_image_batch_encode(ctx_.get(), n_threads_, &batch, out);
        }
        if (!ok) throw std::runtime_error("audio encoder failed");
        py::array_t<float> res({(py::ssize_t) n_tok, (py::ssize_t) n_embd});
        std::copy(out.begin(), out.begin() + (size_t) n_tok * n_embd, res.mutable_data());
        return res;
    }

    int n_embd() const { return clip_n_mmproj_embd(ctx_.get()); }
    int n_tokens(int64_t n_frames) const {
        clip_image_f32 img;
        img.set_size({(int) (n_frames * lfr_m_), n_mel_}, true, true);
        return clip_n_output_tokens(ctx_.get(), &img);
    }

private:
    struct ctx_deleter { void operator()(clip_ctx * c) const { clip_free(c); } };
    std::unique_ptr<clip_ctx, ctx_deleter> ctx_;
    std::unique_ptr<funasr_frontend> frontend_;
    std::mutex mutex_;
    int n_threads_;
    int n_mel_ = 0;
    int lfr_m_ = 0;
};

}  // namespace

void register_encoder_bindings(py::module_ & m) {
    py::class_<AudioEncoder>(m, "AudioEncoder",
        "The funasr mmproj's encoder + adaptor (clip): LFR features [T, n_mel * lfr_m] -> audio rows [n, n_embd].")
        .def(py::init<const std::string &, int, bool, const std::string &>(), py::arg("path"), py::kw_only(),
             py::arg("n_threads") = 0, py::arg("use_gpu") = true, py::arg("flash_attn") = "auto")
        .def("encode", &AudioEncoder::encode, py::arg("features"))
        .def("features", &AudioEncoder::features, py::arg("samples"),
             "LFR features of 16 kHz mono samples in [-1, 1], computed as this mmproj's frontend keys say.")
        .def_property_readonly("hparams", &AudioEncoder::hparams)
        .def("n_tokens", &AudioEncoder::n_tokens, py::arg("n_frames"),
             "Audio rows the LLM sees for n_frames LFR frames (use_low_frame_rate / downsample_rate rule).")
        .def_property_readonly("n_embd", &AudioEncoder::n_embd);
}
