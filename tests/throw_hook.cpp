// FREEPRUNER_THROW: an engine built with -fno-exceptions routes the throwing
// calls' errors to its own failure path. `throw_hook fatal` selects with a
// bad budget, which reaches the engine's handler; `throw_hook returns` uses
// a handler that returns, which must not resume the failed call (abort).
// ctest reads the printed lines.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace engine {
int mode = 0;  // 0: the handler exits, 1: it returns
void fatal(const char* what, int code);
}  // namespace engine

#define FREEPRUNER_THROW(e) engine::fatal((e).what(), static_cast<int>((e).code()))
#include <freepruner/freepruner.hpp>

void engine::fatal(const char* what, int code) {
  std::printf("engine handler: code %d: %s\n", code, what);
  std::fflush(stdout);
  if (mode == 0) std::_Exit(3);
}

namespace {

extern "C" [[noreturn]] void on_abort(int) {
  static const char line[] = "aborted after the handler returned\n";
  (void)!std::fwrite(line, 1, sizeof line - 1, stdout);
  std::fflush(stdout);
  std::_Exit(4);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "fatal") != 0 && std::strcmp(argv[1], "returns") != 0)) {
    std::fprintf(stderr, "usage: throw_hook fatal|returns\n");
    return 2;
  }
  engine::mode = std::strcmp(argv[1], "returns") == 0 ? 1 : 0;
  std::signal(SIGABRT, on_abort);
  const std::vector<float> maps(2 * 2 * 4 * 4, 0.25f);
  const freepruner::attention_view<const float> v(maps.data(), 2, 2, 4);
  const auto kept = freepruner::select(v, freepruner::budget::count(0));
  std::printf("select returned %zu tokens: the error was lost\n", kept.indices.size());
  return 1;
}
