// libFuzzer target: bytes -> shape, layout, element type, options, budget
// and map values -> freepruner::select, checked against the scalar float64
// reference and the contract (see fuzz_select.hpp and fuzz/README.md).
// Any failed check, and any exception other than freepruner::error, aborts,
// so libFuzzer records the input as a crash.

#include "fuzz_select.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {
// FPFUZZ_STATS=1 prints what the inputs exercised when the fuzzer exits.
struct stats_printer {
  ~stats_printer() {
    if (std::getenv("FPFUZZ_STATS") == nullptr) return;
    const auto& s = fpfuzz::stats();
    std::fprintf(stderr,
                 "freepruner fuzz: %ld inputs: %ld rejected as invalid, %ld non_finite, %ld accepted "
                 "(%ld compared exactly with the reference), %ld batched\n",
                 s.inputs, s.rejected, s.non_finite, s.accepted, s.exact, s.batched);
  }
} printer;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    fpfuzz::run_one(data, size);
  } catch (const fpfuzz::check_failed& e) {
    std::fprintf(stderr, "\nfreepruner fuzz: CHECK FAILED: %s\n", e.what());
    std::abort();
  } catch (const freepruner::error& e) {
    std::fprintf(stderr, "\nfreepruner fuzz: freepruner::error from a call that must succeed: %s\n", e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nfreepruner fuzz: an exception that is not freepruner::error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
