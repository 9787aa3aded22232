// The image reader of the command-line tool (tools/picture.hpp): pictures
// that Pillow wrote (fuzz/corpus_files/) decode to their header's size;
// every truncation of each is refused by the checks before stb decodes it,
// so no picture is made of memory a decoder did not write; stb's terse
// failure codes are said plainly.

#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../picture.hpp"

namespace {

namespace picture = freepruner_tool::picture;

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The message of the picture::error that decoding throws ("" if none).
std::string error_of(const std::vector<unsigned char>& bytes, std::uint64_t max_pixels = 1u << 20) {
  try {
    picture::decode(bytes.data(), bytes.size(), "in", max_pixels);
  } catch (const picture::error& e) {
    return e.what();
  }
  return "";
}

const char* const seeds[] = {"rgb.png",       "grey.png",      "interlaced.png", "palette.png", "rgba.png", "baseline.jpg",
                             "progressive.jpg", "grey.jpg",    "rgb.bmp",        "palette.bmp", "rgb.ppm",  "grey.pgm"};

}  // namespace

TEST_CASE("pictures in every format read: 5x6 pixels, as the header says") {
  for (const char* name : seeds) {
    CAPTURE(name);
    const auto bytes = read_file(std::string(FREEPRUNER_FUZZ_CORPUS) + "/" + name);
    const picture::header h = picture::check(bytes.data(), bytes.size(), name, 30);
    CHECK(h.width == 5);
    CHECK(h.height == 6);
    const picture::image im = picture::decode(bytes.data(), bytes.size(), name, 30);
    CHECK(im.width == 5);
    CHECK(im.height == 6);
    CHECK(im.pixels.size() == 5 * 6 * 3);
    CHECK_THAT(error_of(bytes, 29), Catch::Contains("is 5x6 pixels, over the limit of 29 pixels (--max-pixels)"));
  }
}

TEST_CASE("every truncation of a picture is refused before stb decodes it") {
  for (const char* name : seeds) {
    const auto bytes = read_file(std::string(FREEPRUNER_FUZZ_CORPUS) + "/" + name);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(name, n);
      const std::vector<unsigned char> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK_THAT(error_of(cut), Catch::StartsWith("in: "));
    }
  }
}

TEST_CASE("stb's failure codes are said plainly") {
  CHECK(picture::detail::stb_reason("outofmem") == "out of memory");
  CHECK(picture::detail::stb_reason("bad huffman code") == "corrupt JPEG data (bad Huffman code)");
  CHECK(picture::detail::stb_reason("") == "the decoder refused it");
  CHECK(picture::detail::stb_reason(nullptr) == "the decoder refused it");
  CHECK(picture::detail::stb_reason("odd\x1b[0m") == "the decoder refused it (stb: odd\\x1b[0m)");
}
