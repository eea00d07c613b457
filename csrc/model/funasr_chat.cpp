// The ASR prompt block of a chat template: FunASRNano.get_prompt's instructions (funasr 1.4.16
// models/fun_asr_nano/model.py), as our converter writes them (see funasr_chat.h). Its format, one
// entry per line inside a Jinja comment, so that rendering the template ignores it:
//   {#- asr-prompt
//   user=<instruction without a language>
//   user_language=<instruction with {language} where the language's name goes>
//   language=<code>=<name>          (any number of them)
//   -#}
#include "model/funasr_chat.h"

#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace {

const char * const kBegin = "{#- asr-prompt\n";
const char * const kEnd   = "-#}";

}  // namespace

bool funasr_asr_prompt(const std::string & source, const std::string & language, std::string & user) {
    const size_t b = source.find(kBegin);
    if (b == std::string::npos) return false;
    const size_t e = source.find(kEnd, b);
    if (e == std::string::npos) return false;
    std::istringstream block(source.substr(b + std::string(kBegin).size(), e - b - std::string(kBegin).size()));
    std::string line, plain, with_language;
    std::vector<std::pair<std::string, std::string>> languages;
    while (std::getline(block, line)) {
        const size_t eq = line.find('=');
        if (eq == std::string::npos) continue;
        const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
        if (key == "user") {
            plain = value;
        } else if (key == "user_language") {
            with_language = value;
        } else if (key == "language") {
            const size_t eq2 = value.find('=');
            if (eq2 != std::string::npos) languages.emplace_back(value.substr(0, eq2), value.substr(eq2 + 1));
        }
    }
    if (plain.empty()) return false;
    if (language.empty()) {
        user = plain;
        return true;
    }
    std::string lower;
    for (char c : language) lower += (char) ((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : (c == '_' ? '-' : c));
    for (const auto & [code, name] : languages) {
        if (code == lower || name == language) {
            user = with_language;
            const size_t at = user.find("{language}");
            if (at != std::string::npos) user.replace(at, std::string("{language}").size(), name);
            return true;
        }
    }
    std::string known;
    for (const auto & [code, name] : languages) known += (known.empty() ? "" : ", ") + code;
    throw std::invalid_argument("unknown language '" + language + "' for this model; known: " + known);
}
