// libFuzzer target: bytes -> the command-line tool's file readers (tools/):
// the .npy reader, the .npz (zip) reader and the image reader (the header
// checks of picture.hpp, then stb on what they pass). Each may refuse the
// bytes with its own error type, and must do nothing else: no other
// exception, no memory beyond its limits, and an array or picture that is
// consistent with the bytes it came from. See fuzz/README.md.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "../tools/npy.hpp"
#include "../tools/picture.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace npy = freepruner_tool::npy;
namespace picture = freepruner_tool::picture;

constexpr std::uint64_t max_bytes = 1u << 26, max_pixels = 1u << 20;

[[noreturn]] void failed(const char* reader, const std::string& why) {
  std::fprintf(stderr, "\nfreepruner fuzz_files: %s: %s\n", reader, why.c_str());
  std::abort();
}

void check_array(const char* reader, const npy::array& a) {
  std::size_t count = 1;
  for (std::int64_t e : a.shape) count *= static_cast<std::size_t>(e);
  if (count != a.count) failed(reader, "the count is not the product of the shape");
  if (a.count * npy::item_size(a.type) > max_bytes) failed(reader, "an array over the memory limit");
  if (a.count > 0 && a.data == nullptr) failed(reader, "no data");
}

template <class Read>
void run(const char* reader, Read read) {
  try {
    read();
  } catch (const npy::error&) {
  } catch (const picture::error&) {
  } catch (const std::exception& e) {
    failed(reader, std::string("an exception that is not the reader's error: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  npy::limits limits;
  limits.max_bytes = max_bytes;
  run("npy", [&] {
    npy::source f(data, size, "in.npy");
    const npy::array a = npy::load_npy(f, limits);
    check_array("npy", a);
    if (a.count * npy::item_size(a.type) > size) failed("npy", "more data than the file holds");
  });
  run("npz", [&] {
    npy::source f(data, size, "in.npz");
    std::uint64_t total = 0;
    for (const auto& a : npy::load_npz(f, limits)) {
      check_array("npz", a);
      total += a.count * npy::item_size(a.type);
    }
    if (total > max_bytes) failed("npz", "arrays over the memory limit together");
  });
  run("image", [&] {
    const picture::header h = picture::check(data, size, "in.img", max_pixels);
    if (h.width == 0 || h.height == 0 || h.width * h.height > max_pixels) failed("image", "dimensions outside the limit");
    const picture::image im = picture::decode(data, size, "in.img", max_pixels);
    if (static_cast<std::uint64_t>(im.width) != h.width || static_cast<std::uint64_t>(im.height) != h.height)
      failed("image", "stb decoded other dimensions than the header check read");
  });
  return 0;
}
