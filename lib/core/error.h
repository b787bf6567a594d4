// The one error type of SpindleKV and the macros that raise it.
//
// Modelled on FAISS's FAISS_THROW_IF_NOT: a failed check throws
// spindlekv::Error carrying the condition text, the offending values and
// file:line. As an error travels up through the stages each stage prepends
// what it was doing ("loading model.safetensors: tensor x: ..."), and `main`
// catches it once and maps its kind to an exit code.
#pragma once

#include <exception>
#include <sstream>
#include <string>
#include <utility>

namespace spindlekv {

/// What went wrong, coarse enough to choose an exit code from.
enum class ErrorKind {
  kInvalidInput = 2,  ///< a file, option or tensor the user gave is wrong
  kIo = 3,            ///< the operating system refused (open, write, rename)
  kUnsupported = 4,   ///< valid input that this version cannot handle yet
  kInternal = 5,      ///< a bug: an invariant of our own code failed
};

/// Exception thrown by every SpindleKV component.
class Error : public std::exception {
 public:
  Error(ErrorKind kind, std::string message, const char* file = nullptr, int line = 0);

  const char* what() const noexcept override { return full_.c_str(); }
  ErrorKind kind() const noexcept { return kind_; }
  /// The message without the context prefixes and the source location.
  const std::string& message() const noexcept { return message_; }

  /// Prepends "context: " to the message; used while an error unwinds.
  void add_context(const std::string& context);

 private:
  void rebuild();

  ErrorKind kind_;
  std::string message_;
  std::string context_;
  std::string location_;
  std::string full_;
};

/// Exit code of the CLI for an error kind (0 is success, 1 an unknown exception).
int exit_code_for(ErrorKind kind);

namespace detail {

inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& value, const Rest&... rest) {
  os << value;
  append_all(os, rest...);
}

/// Concatenates its arguments with operator<< into one string.
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  append_all(os, args...);
  return os.str();
}

[[noreturn]] void throw_error(ErrorKind kind, const std::string& message, const char* file,
                              int line);

}  // namespace detail

/// Runs `fn`; if it throws spindlekv::Error, prefixes `context` and rethrows.
/// Other exceptions (std::bad_alloc, c10::Error) are wrapped as kInternal so
/// that they too carry the context.
template <typename Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (Error& e) {
    e.add_context(context);
    throw;
  } catch (const std::exception& e) {
    Error wrapped(ErrorKind::kInternal, e.what());
    wrapped.add_context(context);
    throw wrapped;
  }
}

}  // namespace spindlekv

/// Throws spindlekv::Error of `kind` with the streamed message arguments.
#define SKV_THROW(kind, ...)                                     \
  ::spindlekv::detail::throw_error(::spindlekv::ErrorKind::kind, \
                                   ::spindlekv::detail::concat(__VA_ARGS__), __FILE__, __LINE__)

/// Throws kInvalidInput unless `cond` holds; the message names the condition.
#define SKV_CHECK(cond, ...)                                                                \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      ::spindlekv::detail::throw_error(                                                     \
          ::spindlekv::ErrorKind::kInvalidInput,                                            \
          ::spindlekv::detail::concat(__VA_ARGS__, " (check failed: " #cond ")"), __FILE__, \
          __LINE__);                                                                        \
    }                                                                                       \
  } while (false)

#define SKV_CHECK_OP_(a, b, op, ...)                                                              \
  do {                                                                                            \
    const auto& skv_a_ = (a);                                                                     \
    const auto& skv_b_ = (b);                                                                     \
    if (!(skv_a_ op skv_b_)) {                                                                    \
      ::spindlekv::detail::throw_error(                                                           \
          ::spindlekv::ErrorKind::kInvalidInput,                                                  \
          ::spindlekv::detail::concat(__VA_ARGS__, " (check failed: " #a " " #op " " #b ", got ", \
                                      skv_a_, " vs ", skv_b_, ")"),                               \
          __FILE__, __LINE__);                                                                    \
    }                                                                                             \
  } while (false)

/// Comparison checks: the message carries both values.
#define SKV_CHECK_EQ(a, b, ...) SKV_CHECK_OP_(a, b, ==, __VA_ARGS__)
#define SKV_CHECK_NE(a, b, ...) SKV_CHECK_OP_(a, b, !=, __VA_ARGS__)
#define SKV_CHECK_LT(a, b, ...) SKV_CHECK_OP_(a, b, <, __VA_ARGS__)
#define SKV_CHECK_LE(a, b, ...) SKV_CHECK_OP_(a, b, <=, __VA_ARGS__)
#define SKV_CHECK_GT(a, b, ...) SKV_CHECK_OP_(a, b, >, __VA_ARGS__)
#define SKV_CHECK_GE(a, b, ...) SKV_CHECK_OP_(a, b, >=, __VA_ARGS__)

/// Like SKV_CHECK but for our own invariants (kInternal: a bug, not bad input).
#define SKV_ASSERT(cond, ...)                                                                     \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      ::spindlekv::detail::throw_error(                                                           \
          ::spindlekv::ErrorKind::kInternal,                                                      \
          ::spindlekv::detail::concat("internal error: ", __VA_ARGS__, " (" #cond ")"), __FILE__, \
          __LINE__);                                                                              \
    }                                                                                             \
  } while (false)
