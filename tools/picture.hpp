#pragma once
// The patch-grid picture of `freepruner --png`: one cell per candidate
// token, row-major (candidate k at row k / cols, column k % cols), in these
// colors (Okabe-Ito, told apart with the common color-vision deficiencies):
//
//   pivotal        vermillion #D55E00 (over an image: a 40% tint and a solid frame)
//   complementary  sky blue   #56B4E9 (over an image: a 40% tint and a solid frame)
//   dropped        dark grey  #404040 (over an image: greyscale at 30% brightness)
//   grid lines     #1A1A1A, 1 px (over an image: the pixels at half brightness)
//
// Image files are read and written by stb (stb_image, stb_image_resize,
// stb_image_write; the headers of Debian's libstb-dev, compiled in
// stb_impl.cpp). stb trusts its input more than a hostile file deserves, so
// every image is first checked here, from its own bytes: the format (PNG,
// JPEG, BMP, PNM only), the dimensions against a pixel limit, and that the
// file holds all the data its header promises (a PNG's pixel data inflates
// to no more than its size, with zlib). Only then does stb decode it.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.hpp"  // npy::source, npy::printable

#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>

namespace freepruner_tool {
namespace picture {

/// A patch's part in the selection.
enum class patch : unsigned char { dropped, pivotal, complementary };

/// How an image whose aspect differs from the grid's is laid on it.
enum class fit {
  crop,     ///< the centered region of the grid's aspect (CLIP's resize and center crop)
  pad,      ///< the whole image, centered, padded with CLIP's mean color (LLaVA-1.5's "pad")
  stretch,  ///< the whole image, stretched
};

struct rgb {
  unsigned char r, g, b;
};
constexpr rgb pivotal_color{0xD5, 0x5E, 0x00};
constexpr rgb complementary_color{0x56, 0xB4, 0xE9};
constexpr rgb dropped_color{0x40, 0x40, 0x40};
constexpr rgb line_color{0x1A, 0x1A, 0x1A};
constexpr rgb pad_color{122, 116, 104};  // CLIP's image mean, as LLaVA-1.5 pads
constexpr int default_cell = 16, max_side = 16384;

/// 8-bit RGB pixels, row-major.
struct image {
  int width = 0, height = 0;
  std::vector<unsigned char> pixels;
};

/// An image file that cannot be read as a picture.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What an image file's header says, once its structure is checked.
struct header {
  const char* format = "";
  std::uint64_t width = 0, height = 0;
};

namespace detail {

inline std::uint32_t be32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}
inline std::uint32_t be16(const unsigned char* p) { return static_cast<std::uint32_t>(p[0]) << 8 | p[1]; }

// The dimensions against the pixel limit, as soon as the header gives them.
inline void check_pixels(const header& h, const std::string& what, std::uint64_t max_pixels) {
  if (h.width * h.height > max_pixels)
    throw error(what + ": the " + h.format + " image is " + std::to_string(h.width) + "x" + std::to_string(h.height) +
                " pixels, over the limit of " + std::to_string(max_pixels) + " pixels (--max-pixels)");
}

// PNG: the signature, IHDR first, every chunk inside the file, IDAT and IEND
// present, and (with zlib) the pixel data inflating to at least what the
// dimensions need and not much more (a decompression bomb stops here).
inline header png(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  const auto fail = [&](const std::string& why) -> error { return error(what + ": corrupt PNG (" + why + ")"); };
  if (n < 8 + 25 || be32(p + 8) != 13 || std::memcmp(p + 12, "IHDR", 4) != 0) throw fail("no IHDR chunk first");
  header h{"PNG", be32(p + 16), be32(p + 20)};
  const unsigned depth = p[24], color = p[25], interlace = p[28];
  const unsigned channels = color == 0 ? 1 : color == 2 ? 3 : color == 3 ? 1 : color == 4 ? 2 : color == 6 ? 4 : 0;
  const bool depth_ok = color == 0 ? (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)
                        : color == 3 ? (depth == 1 || depth == 2 || depth == 4 || depth == 8)
                                     : (depth == 8 || depth == 16);
  if (channels == 0 || !depth_ok) throw fail("color type " + std::to_string(color) + " with bit depth " + std::to_string(depth));
  if (h.width == 0 || h.height == 0 || h.width > 0x7FFFFFFFu || h.height > 0x7FFFFFFFu)
    throw fail("size " + std::to_string(h.width) + "x" + std::to_string(h.height));
  check_pixels(h, what, max_pixels);
  if (interlace > 1) throw fail("interlace method " + std::to_string(interlace));
  // The bytes the pixel data must inflate to: rows of each Adam7 pass (or
  // the one pass), each with its filter byte.
  static const unsigned x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1}, dx[7] = {8, 8, 4, 4, 2, 2, 1},
                        dy[7] = {8, 8, 8, 4, 4, 2, 2};
  std::uint64_t need = 0;
  for (int pass = 0; pass < (interlace ? 7 : 1); ++pass) {
    const std::uint64_t ox = interlace ? x0[pass] : 0, oy = interlace ? y0[pass] : 0, sx = interlace ? dx[pass] : 1,
                        sy = interlace ? dy[pass] : 1;
    const std::uint64_t w = h.width > ox ? (h.width - ox + sx - 1) / sx : 0, r = h.height > oy ? (h.height - oy + sy - 1) / sy : 0;
    if (w && r) need += r * ((w * channels * depth + 7) / 8 + 1);
  }
  bool idat = false, iend = false;
  for (std::size_t at = 8; !iend;) {
    if (n - at < 12) throw error(what + ": truncated PNG (it ends before its IEND chunk)");
    const std::uint32_t len = be32(p + at);
    if (len > 0x7FFFFFFFu || len > n - at - 12) throw error(what + ": truncated PNG (a chunk runs past the end of the file)");
    const unsigned char* type = p + at + 4;
    if (std::memcmp(type, "IDAT", 4) == 0) {
      idat = true;
    } else if (std::memcmp(type, "IEND", 4) == 0) {
      iend = true;
    } else if (std::memcmp(type, "CgBI", 4) == 0) {
      throw fail("Apple's CgBI variant");
    }
    at += 12 + len;
  }
  if (!idat) throw fail("no IDAT chunk");
#if FREEPRUNER_TOOL_HAVE_ZLIB
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw error(what + ": zlib cannot start");
  std::uint64_t made = 0;
  const std::uint64_t allowed = need + 65536;  // stb allows trailing bytes (some encoders pad rows)
  std::vector<unsigned char> scratch(65536);
  int rc = Z_OK;
  for (std::size_t at = 8; rc == Z_OK && made <= allowed;) {
    const std::uint32_t len = be32(p + at);
    if (std::memcmp(p + at + 4, "IDAT", 4) == 0) {
      z.next_in = p + at + 8;
      z.avail_in = len;
      while (rc == Z_OK && made <= allowed && (z.avail_in > 0 || z.avail_out == 0)) {
        z.next_out = scratch.data();
        z.avail_out = static_cast<uInt>(scratch.size());
        rc = inflate(&z, Z_NO_FLUSH);
        made += scratch.size() - z.avail_out;
        if (rc == Z_BUF_ERROR) rc = Z_OK;  // wants the next chunk
        if (z.avail_in == 0 && z.avail_out != 0) break;
      }
    }
    if (std::memcmp(p + at + 4, "IEND", 4) == 0) break;
    at += 12 + len;
  }
  inflateEnd(&z);
  if (made > allowed)
    throw fail("its pixel data inflates past the " + std::to_string(need) + " bytes a " + std::to_string(h.width) + "x" +
               std::to_string(h.height) + " image needs");
  if (rc != Z_OK && rc != Z_STREAM_END) throw fail("bad compressed pixel data");
  if (made < need) throw error(what + ": truncated PNG (" + std::to_string(made) + " bytes of pixel data, " +
                               std::to_string(need) + " needed)");
#else
  (void)need;
#endif
  return h;
}

// JPEG: the markers in order, a supported frame (baseline or progressive,
// Huffman), every component in some scan, and the end marker.
inline header jpeg(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  const auto truncated = [&] { return error(what + ": truncated JPEG (it ends before its end marker)"); };
  header h{"JPEG", 0, 0};
  bool frame = false;
  unsigned char components[4] = {0, 0, 0, 0};
  bool scanned[4] = {false, false, false, false};
  unsigned count = 0;
  std::size_t at = 2;
  for (;;) {
    if (at >= n || p[at] != 0xFF) {
      if (at >= n) throw truncated();
      throw error(what + ": corrupt JPEG (no marker at byte " + std::to_string(at) + ")");
    }
    while (at < n && p[at] == 0xFF) ++at;  // fill bytes
    if (at >= n) throw truncated();
    const unsigned m = p[at++];
    if (m == 0xD9) break;                          // EOI
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
    if (n - at < 2 || be16(p + at) < 2 || be16(p + at) > n - at) throw truncated();
    const std::size_t len = be16(p + at);
    const unsigned char* seg = p + at + 2;
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
      if (frame) throw error(what + ": corrupt JPEG (two frames)");
      if (len < 8) throw error(what + ": corrupt JPEG (short frame header)");
      frame = true;
      h.height = be16(seg + 1);
      h.width = be16(seg + 3);
      count = seg[5];
      if (count != 1 && count != 3 && count != 4)
        throw error(what + ": JPEG with " + std::to_string(count) + " components is not supported (1, 3 or 4 are)");
      if (len < 8 + 3 * count) throw error(what + ": corrupt JPEG (short frame header)");
      for (unsigned c = 0; c < count; ++c) components[c] = seg[6 + 3 * c];
      if (h.width == 0 || h.height == 0)
        throw error(what + ": JPEG of size " + std::to_string(h.width) + "x" + std::to_string(h.height) +
                    " is not supported (a height given later, by a DNL marker, is not read)");
      check_pixels(h, what, max_pixels);
    } else if ((m >= 0xC3 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      static const char hex[] = "0123456789ABCDEF";
      throw error(what + ": JPEG frame type 0xFF" + hex[m >> 4] + hex[m & 15] +
                  " is not supported (baseline and progressive Huffman JPEGs are)");
    } else if (m == 0xC4) {
      // Huffman tables: stb 2.27 builds a table of more than 256 codes past its end.
      for (std::size_t k = 0; k < len - 2;) {
        const std::size_t left = len - 2 - k;
        std::size_t codes = 0;
        if (left >= 17)
          for (int b = 1; b <= 16; ++b) codes += seg[k + static_cast<std::size_t>(b)];
        if (left < 17 || (seg[k] >> 4) > 1 || (seg[k] & 15) > 3 || codes > 256 || left - 17 < codes)
          throw error(what + ": corrupt JPEG (bad Huffman table)");
        k += 17 + codes;
      }
    } else if (m == 0xDA) {
      if (!frame) throw error(what + ": corrupt JPEG (a scan before the frame header)");
      const unsigned in_scan = len >= 3 ? seg[0] : 0;
      if (in_scan == 0 || len < 6 + 2 * in_scan) throw error(what + ": corrupt JPEG (bad scan header)");
      for (unsigned k = 0; k < in_scan; ++k)
        for (unsigned c = 0; c < count; ++c)
          if (components[c] == seg[1 + 2 * k]) scanned[c] = true;
      at += len;
      // The entropy-coded data: up to a marker other than a stuffed 0xFF00 or a restart.
      while (at + 1 < n && !(p[at] == 0xFF && p[at + 1] != 0 && !(p[at + 1] >= 0xD0 && p[at + 1] <= 0xD7) && p[at + 1] != 0xFF))
        ++at;
      if (at + 1 >= n) throw truncated();
      continue;
    }
    at += len;
  }
  if (!frame) throw error(what + ": corrupt JPEG (no frame header)");
  for (unsigned c = 0; c < count; ++c)
    if (!scanned[c]) throw error(what + ": incomplete JPEG (component " + std::to_string(c) + " has no scan: no pixel data)");
  return h;
}

// BMP: a header stb reads, and every row of pixels inside the file.
inline header bmp(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  if (n < 26) throw error(what + ": truncated BMP header");
  const std::uint32_t offset = npy::detail::le32(p + 10), size = npy::detail::le32(p + 14);
  if (size != 12 && size != 40 && size != 56 && size != 108 && size != 124)
    throw error(what + ": BMP header of " + std::to_string(size) + " bytes is not supported");
  if (n < 14 + size) throw error(what + ": truncated BMP header");
  std::int64_t w = 0, hh = 0;
  unsigned bpp = 0;
  std::uint32_t compression = 0;
  if (size == 12) {
    w = npy::detail::le16(p + 18);
    hh = static_cast<std::int16_t>(npy::detail::le16(p + 20));
    bpp = npy::detail::le16(p + 24);
  } else {
    w = static_cast<std::int32_t>(npy::detail::le32(p + 18));
    hh = static_cast<std::int32_t>(npy::detail::le32(p + 22));
    bpp = npy::detail::le16(p + 28);
    compression = npy::detail::le32(p + 30);
  }
  if (w <= 0 || hh == 0) throw error(what + ": BMP of size " + std::to_string(w) + "x" + std::to_string(hh));
  header h{"BMP", static_cast<std::uint64_t>(w), static_cast<std::uint64_t>(hh < 0 ? -hh : hh)};
  check_pixels(h, what, max_pixels);
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
    throw error(what + ": BMP of " + std::to_string(bpp) + " bits per pixel is not supported");
  if (compression != 0 && !(compression == 3 && (bpp == 16 || bpp == 32)))
    throw error(what + ": compressed BMP (method " + std::to_string(compression) + ") is not supported");
  const std::uint64_t row = (h.width * bpp + 31) / 32 * 4;
  if (offset < 14 + size || offset > n || row * h.height > n - offset)
    throw error(what + ": truncated BMP (" + std::to_string(h.width) + "x" + std::to_string(h.height) + " needs " +
                std::to_string(row * h.height) + " bytes of pixels)");
  return h;
}

// PNM (binary PGM P5, PPM P6, 8-bit), parsed strictly where stb is lax: three
// numbers of at most 9 digits (stb's reader overflows past int), then one
// whitespace byte, then all of the pixels.
inline header pnm(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  std::size_t at = 2;
  const auto space = [](unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  std::uint64_t v[3] = {0, 0, 0};
  for (auto& value : v) {
    for (;;) {  // whitespace and comments
      while (at < n && space(p[at])) ++at;
      if (at < n && p[at] == '#') {
        while (at < n && p[at] != '\n' && p[at] != '\r') ++at;
        continue;
      }
      break;
    }
    std::size_t digits = 0;
    while (at < n && p[at] >= '0' && p[at] <= '9') {
      if (++digits > 9) throw error(what + ": corrupt PNM header (a number of more than 9 digits)");
      value = value * 10 + (p[at++] - '0');
    }
    if (digits == 0) throw error(what + ": corrupt PNM header (width, height and maximum value expected)");
  }
  if (at >= n || !space(p[at])) throw error(what + ": corrupt PNM header (no whitespace after the maximum value)");
  ++at;
  header h{"PNM", v[0], v[1]};
  // 16-bit samples (maximum value over 255) are refused: stb 2.27 converts
  // them to RGB as if they were 8-bit, and reads past its buffer.
  if (h.width == 0 || h.height == 0 || v[2] == 0 || v[2] > 255)
    throw error(what + ": PNM of size " + std::to_string(h.width) + "x" + std::to_string(h.height) + " and maximum value " +
                std::to_string(v[2]) + " is not supported");
  check_pixels(h, what, max_pixels);
  const std::uint64_t need = h.width * h.height * (p[1] == '6' ? 3 : 1);
  if (need > n - at)
    throw error(what + ": truncated PNM (" + std::to_string(h.width) + "x" + std::to_string(h.height) + " needs " +
                std::to_string(need) + " bytes of pixels, " + std::to_string(n - at) + " are there)");
  return h;
}

// stb's terse failure codes, said plainly.
inline std::string stb_reason(const char* code) {
  static const char* const table[][2] = {
      {"outofmem", "out of memory"}, {"too large", "too large"}, {"bad huffman code", "corrupt JPEG data (bad Huffman code)"},
      {"bad zlib header", "corrupt PNG data (bad zlib header)"}, {"not enough pixels", "truncated PNG pixel data"},
      {"bad png sig", "not a PNG"}, {"bad BMP", "corrupt BMP"}, {"unknown image type", "an image type stb cannot read"}};
  const std::string c = code ? code : "";
  for (const auto& row : table)
    if (c == row[0]) return row[1];
  return c.empty() ? "the decoder refused it" : "the decoder refused it (stb: " + npy::printable(c) + ")";
}

}  // namespace detail

/// The format and dimensions of the image in [p, p + n), after checking that
/// the file is complete and within `max_pixels`.
inline header check(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  header h;
  if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) h = detail::png(p, n, what, max_pixels);
  else if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) h = detail::jpeg(p, n, what, max_pixels);
  else if (n >= 2 && p[0] == 'B' && p[1] == 'M') h = detail::bmp(p, n, what, max_pixels);
  else if (n >= 2 && p[0] == 'P' && (p[1] == '5' || p[1] == '6')) h = detail::pnm(p, n, what, max_pixels);
  else throw error(what + ": not a PNG, JPEG, BMP or binary PNM (PGM/PPM) image");
  return h;
}

/// Decodes the image in [p, p + n) to 8-bit RGB, after check().
inline image decode(const unsigned char* p, std::size_t n, const std::string& what, std::uint64_t max_pixels) {
  const header h = check(p, n, what, max_pixels);
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max())) throw error(what + ": too large a file for stb");
  int w = 0, hh = 0, channels = 0;
  unsigned char* data = stbi_load_from_memory(p, static_cast<int>(n), &w, &hh, &channels, 3);
  if (data == nullptr)
    throw error(what + ": cannot read the " + h.format + " image: " + detail::stb_reason(stbi_failure_reason()));
  image out;
  out.width = w;
  out.height = hh;
  out.pixels.assign(data, data + static_cast<std::size_t>(w) * static_cast<std::size_t>(hh) * 3);
  stbi_image_free(data);
  return out;
}

/// Reads a PNG, JPEG, BMP or binary PNM file; `shown` names it in messages.
/// The file itself may be at most 16 bytes a pixel of the limit (and 1 MiB).
inline image load(const std::string& path, const std::string& shown, std::uint64_t max_pixels) {
  npy::source f(path, shown);
  const std::uint64_t max_file = max_pixels * 16 + (1u << 20);
  if (f.size() > max_file)
    throw error(shown + ": an image file of " + std::to_string(f.size()) + " bytes, over the " + std::to_string(max_file) +
                " read for a limit of " + std::to_string(max_pixels) + " pixels (--max-pixels)");
  const auto bytes = f.read(0, static_cast<std::size_t>(f.size()), shown);
  return decode(bytes.data(), bytes.size(), shown, max_pixels);
}

/// Pixels per patch: `cell` if given (> 0), else 16 without an image, else
/// about the image's own resolution; the picture stays within max_side.
inline int choose_cell(int cell, int rows, int cols, const image* photo) {
  const int limit = std::max(1, max_side / std::max(rows, cols));
  if (cell > 0) {
    if (cell > limit)
      throw std::runtime_error("--cell " + std::to_string(cell) + " makes a picture wider than " +
                               std::to_string(max_side) + " px for a " + std::to_string(rows) + "x" +
                               std::to_string(cols) + " grid (at most " + std::to_string(limit) + ")");
    return cell;
  }
  int want = default_cell;
  if (photo != nullptr) {
    const double per_patch = std::min(static_cast<double>(photo->width) / cols, static_cast<double>(photo->height) / rows);
    want = std::clamp(static_cast<int>(std::lround(per_patch)), 4, 64);
  }
  return std::min(want, limit);
}

/// `photo` laid on a width x height canvas as `how` says.
inline image fit_to(const image& photo, int width, int height, fit how) {
  image out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  const double aspect = static_cast<double>(width) / height;
  const unsigned char* src = photo.pixels.data();
  int src_w = photo.width, src_h = photo.height;
  if (how == fit::crop) {
    if (src_w > aspect * src_h) {
      const int w = std::max(1, static_cast<int>(std::lround(src_h * aspect)));
      src += static_cast<std::size_t>((src_w - w) / 2) * 3;
      src_w = w;
    } else {
      const int h = std::max(1, static_cast<int>(std::lround(src_w / aspect)));
      src += static_cast<std::size_t>((src_h - h) / 2) * static_cast<std::size_t>(photo.width) * 3;
      src_h = h;
    }
  }
  int x0 = 0, y0 = 0, dst_w = width, dst_h = height;
  if (how == fit::pad) {
    for (std::size_t k = 0; k < out.pixels.size(); k += 3) {
      out.pixels[k] = pad_color.r;
      out.pixels[k + 1] = pad_color.g;
      out.pixels[k + 2] = pad_color.b;
    }
    if (src_w > aspect * src_h) dst_h = std::max(1, static_cast<int>(std::lround(width * static_cast<double>(src_h) / src_w)));
    else dst_w = std::max(1, static_cast<int>(std::lround(height * static_cast<double>(src_w) / src_h)));
    x0 = (width - dst_w) / 2;
    y0 = (height - dst_h) / 2;
  }
  unsigned char* dst = out.pixels.data() + (static_cast<std::size_t>(y0) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x0)) * 3;
  if (!stbir_resize_uint8(src, src_w, src_h, photo.width * 3, dst, dst_w, dst_h, width * 3, 3))
    throw std::runtime_error("cannot resize the image to " + std::to_string(dst_w) + "x" + std::to_string(dst_h));
  return out;
}

/// The grid picture: `states` has rows * cols patches, row-major; `photo`
/// (may be null) is laid under it as `how` says.
inline image render(const std::vector<patch>& states, int rows, int cols, int cell, const image* photo, fit how) {
  const int width = cols * cell, height = rows * cell;
  image out = photo ? fit_to(*photo, width, height, how) : image{width, height, {}};
  out.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  const bool lines = cell >= 4;
  const int frame = std::max(1, cell / 8);  // inside each kept patch, over an image
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      unsigned char* px = &out.pixels[(static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3];
      const patch state = states[static_cast<std::size_t>(y / cell) * static_cast<std::size_t>(cols) + static_cast<std::size_t>(x / cell)];
      const bool line = lines && (x % cell == 0 || y % cell == 0 || x == width - 1 || y == height - 1);
      const auto mix = [px](rgb c, double t) {
        px[0] = static_cast<unsigned char>(std::lround(px[0] * (1 - t) + c.r * t));
        px[1] = static_cast<unsigned char>(std::lround(px[1] * (1 - t) + c.g * t));
        px[2] = static_cast<unsigned char>(std::lround(px[2] * (1 - t) + c.b * t));
      };
      if (photo == nullptr) {
        const rgb c = line ? line_color
                      : state == patch::pivotal       ? pivotal_color
                      : state == patch::complementary ? complementary_color
                                                      : dropped_color;
        px[0] = c.r;
        px[1] = c.g;
        px[2] = c.b;
        continue;
      }
      const int cx = x % cell, cy = y % cell;
      const bool edge = lines && (cx <= frame || cy <= frame || cx >= cell - frame || cy >= cell - frame);
      if (state == patch::pivotal) {
        mix(pivotal_color, edge ? 1.0 : 0.4);
      } else if (state == patch::complementary) {
        mix(complementary_color, edge ? 1.0 : 0.4);
      } else {
        const auto grey = static_cast<unsigned char>(std::lround(0.3 * (0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2])));
        px[0] = px[1] = px[2] = grey;
      }
      if (line) mix(rgb{0, 0, 0}, 0.5);
    }
  return out;
}

/// The picture as PNG bytes.
inline std::string encode_png(const image& picture) {
  std::string out;
  const auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<std::size_t>(size));
  };
  if (!stbi_write_png_to_func(append, &out, picture.width, picture.height, 3, picture.pixels.data(), picture.width * 3))
    throw error("cannot encode a " + std::to_string(picture.width) + "x" + std::to_string(picture.height) + " PNG");
  return out;
}

}  // namespace picture
}  // namespace freepruner_tool
