// Writes the files the tool's command-line tests read into the folder given:
// good maps in every form and format, and one broken file per error class.
//
//   freepruner_tool_fixtures DIR

#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "maps.hpp"
#include "npy_writer.hpp"

namespace {

using shape_t = std::vector<std::int64_t>;

std::vector<float> slice(const std::vector<float>& v, std::size_t from, std::size_t count) {
  return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(from + count));
}

template <class To>
std::vector<To> cast(const std::vector<float>& v) {
  std::vector<To> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = static_cast<To>(v[k]);
  return out;
}

// A binary PPM picture (stb_image reads it): a gradient with a disc.
std::string photo(int w, int h) {
  std::string s = "P6\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool disc = (x - w / 2) * (x - w / 2) + (y - h / 2) * (y - h / 2) < h * h / 9;
      s += static_cast<char>(x * 255 / w);
      s += static_cast<char>(y * 255 / h);
      s += static_cast<char>(disc ? 255 : 0);
    }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: freepruner_tool_fixtures DIR\n");
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  const auto put = [&](const char* name, const std::string& bytes) { npy_writer::write((dir / name).string(), bytes); };
  std::mt19937_64 rng(20241123);
  const int L = 2, H = 2, N = 17;  // CLS + 4x4 patches
  const std::size_t layer = static_cast<std::size_t>(H * N * N);
  const auto maps = tool_test::random_maps(rng, L, H, N);

  put("maps.npy", npy_writer::npy_of(maps, "<f4", {L, H, N, N}));
  put("maps_f16.npy", npy_writer::npy_of(cast<Eigen::half>(maps), "<f2", {L, H, N, N}));
  put("maps_f64.npy", npy_writer::npy_of(cast<double>(maps), "<f8", {L, H, N, N}));
  put("maps_v3.npy", npy_writer::npy_of(maps, "<f4", {L, H, N, N}, 3));
  put("maps_lnn.npy", npy_writer::npy_of(slice(maps, 0, static_cast<std::size_t>(L * N * N)), "<f4", {L, N, N}));
  put("maps_nn.npy", npy_writer::npy_of(slice(maps, 0, static_cast<std::size_t>(N * N)), "<f4", {N, N}));
  const auto batch = tool_test::random_maps(rng, 2 * L, H, N);
  put("batch.npy", npy_writer::npy_of(batch, "<f4", {2, L, H, N, N}));

  std::vector<npy_writer::entry> layers, batch_layers;
  for (int l = 0; l < L; ++l) {
    layers.push_back({"arr_" + std::to_string(l) + ".npy", npy_writer::npy_of(slice(maps, l * layer, layer), "<f4", {H, N, N})});
    std::vector<float> items = slice(batch, static_cast<std::size_t>(l) * layer, layer);  // item 0, layer l
    const auto second = slice(batch, static_cast<std::size_t>(L + l) * layer, layer);    // item 1, layer l
    items.insert(items.end(), second.begin(), second.end());
    batch_layers.push_back({"arr_" + std::to_string(l) + ".npy", npy_writer::npy_of(items, "<f4", {2, H, N, N})});
  }
  put("maps.npz", npy_writer::zip(layers));
  npy_writer::zip_options z64;
  z64.zip64 = true;
  put("maps_zip64.npz", npy_writer::zip(layers, z64));
  put("batch.npz", npy_writer::zip(batch_layers));
#if FREEPRUNER_TOOL_HAVE_ZLIB
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  put("maps_deflate.npz", npy_writer::zip(layers, deflate));
#else
  // Hand-marked as deflated: the tool built without zlib must refuse it.
  std::string marked = npy_writer::zip(layers);
  marked[8] = 8;
  marked[marked.find("PK\1\2") + 10] = 8;
  put("maps_deflate.npz", marked);
#endif
  put("photo.ppm", photo(60, 40));
  // Preset shapes: CLIP-336 (CLS + 24x24, float16) and Qwen2-VL on a 4x4 patch grid.
  put("clip336.npy", npy_writer::npy_of(cast<Eigen::half>(tool_test::random_maps(rng, 2, 1, 577)), "<f2", {2, 1, 577, 577}));
  put("qwen4x4.npy", npy_writer::npy_of(tool_test::random_maps(rng, 2, 2, 16), "<f4", {2, 2, 16, 16}));
  put("wide.npy", npy_writer::npy_of(tool_test::random_maps(rng, 1, 1, 65), "<f4", {1, 1, 65, 65}));

  // One file per error class.
  put("bad_magic.npy", "this is not numpy");
  put("int32.npy", npy_writer::npy_of(std::vector<std::int32_t>(static_cast<std::size_t>(N * N)), "<i4", {N, N}));
  put("fortran.npy", npy_writer::npy(npy_writer::dict("<f4", true, {L, H, N, N}), maps.data(), maps.size() * 4));
  put("rank1.npy", npy_writer::npy_of(slice(maps, 0, 17), "<f4", {17}));
  put("rank6.npy", npy_writer::npy_of(maps, "<f4", {1, 1, L, H, N, N}));
  put("nonsquare.npy", npy_writer::npy_of(slice(maps, 0, static_cast<std::size_t>(L * H * N * (N - 1))), "<f4", {L, H, N, N - 1}));
  put("empty_axis.npy", npy_writer::npy_of(std::vector<float>{}, "<f4", {0, H, N, N}));
  const std::string whole = npy_writer::npy_of(maps, "<f4", {L, H, N, N});
  put("truncated.npy", whole.substr(0, whole.size() - 100));
  const std::string archive = npy_writer::zip(layers);
  put("truncated.npz", archive.substr(0, archive.size() / 2));
  std::string crc = archive;
  crc[200] = static_cast<char>(crc[200] ^ 1);  // inside arr_0's data
  put("crc.npz", crc);
  put("mixed.npz", npy_writer::zip({layers[0], {"arr_1.npy", npy_writer::npy_of(slice(maps, 0, static_cast<std::size_t>(N * N)), "<f4", {N, N})}}));
  put("mixed_dtype.npz", npy_writer::zip({layers[0], {"arr_1.npy", npy_writer::npy_of(cast<double>(slice(maps, layer, layer)), "<f8", {H, N, N})}}));
  auto nan = maps;
  nan[5] = std::numeric_limits<float>::quiet_NaN();
  put("nan.npy", npy_writer::npy_of(nan, "<f4", {L, H, N, N}));

  // Hostile files: one per class of the image checks, and the paths the
  // error messages must report with errno's reason.
  const std::string whole_photo = photo(60, 40);
  put("truncated.ppm", whole_photo.substr(0, whole_photo.size() - 10));
  put("overflow.pgm", "P5\n4294967295 1\n255\n" + std::string(64, '\0'));  // stb's int overflows here
  put("bomb.pgm", "P5\n30000 30000\n255\n" + std::string(64, '\0'));
  std::string bmp = "BM";  // a 54-byte header claiming 20000x20000 pixels of 24 bits
  npy_writer::put32(bmp, 54 + 3u * 20000 * 20000);
  npy_writer::put32(bmp, 0);
  npy_writer::put32(bmp, 54);
  npy_writer::put32(bmp, 40);
  npy_writer::put32(bmp, 20000);
  npy_writer::put32(bmp, 20000);
  npy_writer::put16(bmp, 1);
  npy_writer::put16(bmp, 24);
  bmp += std::string(24, '\0');
  put("bomb.bmp", bmp);
  // SOI, a baseline frame header of 8x8 with 3 components, EOI: no scan at all.
  put("frame_only.jpg", std::string("\xff\xd8\xff\xc0\x00\x11\x08\x00\x08\x00\x08\x03"
                                    "\x01\x11\x00\x02\x11\x00\x03\x11\x00\xff\xd9", 23));
  // A Huffman table of 257 codes (stb 2.27 writes it past its array), and 16-bit PGM (stb reads past its buffer).
  std::string dht("\xff\xd8\xff\xc4\x01\x14\x00", 7);  // DHT of 2 + 1 + 16 + 257 bytes, table 0
  dht += std::string(14, '\0') + "\x02\xff";  // 16 counts: 2 codes of 15 bits, 255 of 16 bits
  dht += std::string(257, '\0') + "\xff\xd9";
  put("huffman.jpg", dht);
  put("deep.pgm", "P5\n2 2\n65535\n" + std::string(8, '\0'));
  put("anim.gif", "GIF89a\x01\x00\x01\x00\x00\x00\x00;");
#if FREEPRUNER_TOOL_HAVE_ZLIB
  {
    // A 1x1 greyscale PNG whose pixel data inflates to 1 MiB, not 2 bytes.
    const auto chunk = [](std::string& out, const char* type, const std::string& data) {
      std::string body = std::string(type, 4) + data;
      const auto be = [&out](std::uint32_t v) {
        for (int k = 3; k >= 0; --k) out += static_cast<char>((v >> (8 * k)) & 0xFF);
      };
      be(static_cast<std::uint32_t>(data.size()));
      out += body;
      be(freepruner_tool::npy::crc32(reinterpret_cast<const unsigned char*>(body.data()), body.size()));
    };
    std::string ihdr("\0\0\0\1\0\0\0\1\x08\0\0\0\0", 13);
    const std::string zeros(1u << 20, '\0');
    uLongf packed_size = compressBound(static_cast<uLong>(zeros.size()));
    std::string packed(packed_size, '\0');
    compress(reinterpret_cast<Bytef*>(&packed[0]), &packed_size, reinterpret_cast<const Bytef*>(zeros.data()),
             static_cast<uLong>(zeros.size()));
    packed.resize(packed_size);
    std::string png("\x89PNG\r\n\x1a\n", 8);
    chunk(png, "IHDR", ihdr);
    chunk(png, "IDAT", packed);
    chunk(png, "IEND", "");
    put("bomb.png", png);
  }
#endif
  std::error_code ec;
  fs::remove(dir / "loop.npy", ec);
  fs::create_symlink("loop.npy", dir / "loop.npy", ec);  // a link to itself
  fs::create_directories(dir / "partial_1.png");          // a batch's second picture cannot be written
  put("not_a_zip.npz", whole.substr(0, 200));
  put("axes.npy", npy_writer::npy_of(std::vector<float>{1}, "<f4", shape_t(10000, 1)));  // 10,000 axes
  return 0;
}
