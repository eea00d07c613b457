// funasr-transcribe: Fun-ASR-Nano speech recognition of one WAV file through the engine's C++ API
// alone (engine/transcriber.h), no Python in the process.
//
//   funasr-transcribe -m LLM.gguf --mmproj MMPROJ.gguf [-l LANG] [-t N] [-n N] [--device NAME] [--tokens] FILE.wav
//
// FILE.wav: 16-bit PCM, 16 kHz, mono. The prompt is Fun-ASR's, as llama-server builds it from the
// LLM's chat template (the converter writes the instruction into it: model/funasr_chat.h, asked
// through common_chat_get_asr_prompt). --device: where the LLM and the encoder run, as funasr-cpp's
// --device ("auto": the first GPU, else the CPU; "cpu", "vulkan0", ...). Prints the text; --tokens
// also prints the token ids.
// Errors go to stderr as "error: ..." with exit status 1 (2 for a usage error).
#include "chat.h"
#include "engine/log_capture.h"
#include "engine/transcriber.h"
#include "mtmd.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct options {
    std::string llm, mmproj, language, wav;
    std::string device = "auto";  // funasr_cpp.options.LoadOptions.device
    int n_threads = 0;         // all cores
    int max_new_tokens = 512;  // funasr_cpp.options.TranscribeOptions.max_new_tokens
    bool tokens = false;
};

[[noreturn]] void usage(const char * argv0, const std::string & problem) {
    if (!problem.empty()) fprintf(stderr, "error: %s\n", problem.c_str());
    fprintf(stderr, "usage: %s -m LLM.gguf --mmproj MMPROJ.gguf [-l LANG] [-t N_THREADS] [-n MAX_NEW_TOKENS] "
                    "[--device NAME] [--tokens] FILE.wav\n", argv0);
    exit(2);
}

options parse_args(int argc, char ** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(argv[0], a + " needs a value");
            return argv[++i];
        };
        auto number = [&]() -> int {
            const std::string v = value();
            char * end = nullptr;
            const long n = strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || n < 0 || n > 1000000) usage(argv[0], a + " needs a count, got '" + v + "'");
            return (int) n;
        };
        if (a == "-m" || a == "--model") o.llm = value();
        else if (a == "--mmproj") o.mmproj = value();
        else if (a == "-l" || a == "--language") o.language = value();
        else if (a == "-t" || a == "--threads") o.n_threads = number();
        else if (a == "-n" || a == "--max-new-tokens") o.max_new_tokens = number();
        else if (a == "--device") o.device = value();
        else if (a == "--tokens") o.tokens = true;
        else if (a == "-h" || a == "--help") usage(argv[0], "");
        else if (!a.empty() && a[0] == '-') usage(argv[0], "unknown option " + a);
        else if (o.wav.empty()) o.wav = a;
        else usage(argv[0], "one WAV file only");
    }
    if (o.llm.empty() || o.mmproj.empty() || o.wav.empty()) usage(argv[0], "-m, --mmproj and a WAV file are needed");
    return o;
}

uint32_t le32(const unsigned char * p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t) p[3] << 24); }
uint16_t le16(const unsigned char * p) { return (uint16_t) (p[0] | (p[1] << 8)); }

// 16-bit PCM mono 16 kHz samples as floats in [-1, 1) (x / 32768, as funasr_cpp.audio reads them).
std::vector<float> read_wav(const std::string & path) {
    using funasr::errc;
    std::ifstream f(path, std::ios::binary);
    if (!f) throw funasr::error(errc::not_found, "cannot open " + path);
    const std::vector<unsigned char> d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (d.size() < 12 || memcmp(d.data(), "RIFF", 4) != 0 || memcmp(d.data() + 8, "WAVE", 4) != 0) {
        throw funasr::error(errc::invalid_argument, path + ": not a WAV file");
    }
    bool have_fmt = false;
    for (size_t at = 12; at + 8 <= d.size();) {
        const uint32_t size = le32(&d[at + 4]);
        const unsigned char * body = &d[at + 8];
        if (memcmp(&d[at], "fmt ", 4) == 0 && size >= 16 && at + 8 + 16 <= d.size()) {
            if (le16(body) != 1 || le16(body + 2) != 1 || le32(body + 4) != 16000 || le16(body + 14) != 16) {
                throw funasr::error(errc::invalid_argument, path + ": needs 16-bit PCM, 16 kHz, mono");
            }
            have_fmt = true;
        } else if (memcmp(&d[at], "data", 4) == 0) {
            if (!have_fmt) throw funasr::error(errc::invalid_argument, path + ": data before the fmt chunk");
            const size_t have = d.size() - (at + 8);
            if (size > have) {
                throw funasr::error(errc::invalid_argument, path + ": the header declares " + std::to_string(size) +
                                    " bytes of audio, the file holds " + std::to_string(have));
            }
            if (size < 2) throw funasr::error(errc::invalid_argument, path + ": no audio samples");
            std::vector<float> x(size / 2);
            for (size_t i = 0; i < x.size(); ++i) x[i] = (float) (int16_t) le16(body + 2 * i) / 32768.0f;
            return x;
        }
        at += 8 + size + (size & 1);
    }
    throw funasr::error(errc::invalid_argument, path + ": no data chunk");
}

// Fun-ASR's ChatML prompt for language (empty: none) from the LLM's chat template.
std::string asr_prompt(const llama_model * model, const std::string & language) {
    common_chat_templates_ptr tmpls = common_chat_templates_init(model, "");
    const common_chat_prompt_preset preset = common_chat_get_asr_prompt(tmpls.get(), language);
    if (!language.empty() && !preset.has_language) {
        throw funasr::error(funasr::errc::invalid_argument, "the LLM's chat template has no Fun-ASR prompt "
                            "(convert the model with funasr-cpp)");
    }
    common_chat_templates_inputs in;
    if (!preset.system.empty()) {
        common_chat_msg system;
        system.role = "system";
        system.content = preset.system;
        in.messages.push_back(system);
    }
    common_chat_msg user;
    user.role = "user";
    user.content = preset.user + mtmd_default_marker();
    in.messages.push_back(user);
    in.add_generation_prompt = true;
    in.use_jinja = true;
    return common_chat_templates_apply(tmpls.get(), in).prompt;
}

int run(const options & o) {
    funasr::install_log_callback();  // llama.cpp's log is quiet; its errors end our messages
    llama_backend_init();
    const std::vector<float> samples = read_wav(o.wav);
    funasr::Transcriber asr({o.llm, o.mmproj,
                             {o.n_threads, /*n_gpu_layers*/ -1, /*n_ctx*/ 0, /*n_batch*/ 512, "auto", "f16", o.device},
                             /*use_gpu*/ true, /*n_parallel*/ 1});
    funasr::Request r;
    try {
        r.prompt = asr_prompt(asr.handles().model(), o.language);
    } catch (const std::invalid_argument & e) {  // an unknown language (funasr_chat.h)
        throw funasr::error(funasr::errc::invalid_argument, e.what());
    }
    r.max_new_tokens = o.max_new_tokens;
    r.draft_max = 0;
    const funasr::Generation g = asr.wait(asr.submit(samples, r));
    printf("%s\n", g.text.c_str());
    if (o.tokens) {
        for (size_t i = 0; i < g.tokens.size(); ++i) printf(i ? " %d" : "%d", g.tokens[i]);
        printf("\n");
    }
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    const options o = parse_args(argc, argv);
    try {
        return run(o);
    } catch (const funasr::error & e) {
        fprintf(stderr, "error: %s\n", e.what());
    } catch (const std::exception & e) {
        fprintf(stderr, "error: %s\n", e.what());
    }
    return 1;
}
