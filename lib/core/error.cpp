#include "core/error.h"

#include <cstring>

namespace spindlekv {

Error::Error(ErrorKind kind, std::string message, const char* file, int line)
    : kind_(kind), message_(std::move(message)) {
  if (file != nullptr) {
    // Keep only the path below the repository's lib/ or apps/ folder: enough
    // to find the line, short enough to read.
    const char* shown = file;
    for (const char* marker : {"/lib/", "/apps/", "/tests/"}) {
      if (const char* p = std::strstr(file, marker)) {
        shown = p + 1;
        break;
      }
    }
    location_ = std::string(shown) + ":" + std::to_string(line);
  }
  rebuild();
}

void Error::add_context(const std::string& context) {
  context_ = context_.empty() ? context : context + ": " + context_;
  rebuild();
}

void Error::rebuild() {
  full_.clear();
  if (!context_.empty()) full_ = context_ + ": ";
  full_ += message_;
  if (!location_.empty()) full_ += " [" + location_ + "]";
}

int exit_code_for(ErrorKind kind) { return static_cast<int>(kind); }

namespace detail {

void throw_error(ErrorKind kind, const std::string& message, const char* file, int line) {
  throw Error(kind, message, file, line);
}

}  // namespace detail
}  // namespace spindlekv
