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
// stb_image_write; Debian's libstb-dev).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

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

/// Reads a picture stb_image knows (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM).
inline image load(const std::string& path) {
  int w = 0, h = 0, channels = 0;
  unsigned char* data = stbi_load(path.c_str(), &w, &h, &channels, 3);
  if (data == nullptr) throw std::runtime_error(path + ": cannot read the image: " + stbi_failure_reason());
  image out;
  out.width = w;
  out.height = h;
  out.pixels.assign(data, data + static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  stbi_image_free(data);
  return out;
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

inline void write_png(const std::string& path, const image& picture) {
  if (!stbi_write_png(path.c_str(), picture.width, picture.height, 3, picture.pixels.data(), picture.width * 3))
    throw std::runtime_error(path + ": cannot write the PNG file");
}

}  // namespace picture
}  // namespace freepruner_tool
