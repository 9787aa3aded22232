#pragma once
/// \file positions.hpp
/// Kept token indices mapped back to the patch grid, so an engine with 2-D
/// or M-RoPE positions gives each kept token the position it had before
/// pruning (instead of renumbering the survivors).
///
/// A `grid_layout` says how the N tokens of one input (image, crop, frame)
/// lie: `prefix_tokens`, then `rows` x `cols` grid tokens in row-major
/// order, then `suffix_tokens`. With `frames` > 1, indices run over the
/// frame-major concatenation of the frames (index = frame * N + token), or
/// come one selection per frame. For merged maps (see merge.hpp) the grid is
/// the merged one: the tokens the LLM sees.

#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../error.hpp"
#include "../options.hpp"

namespace freepruner {

/// Where the tokens of one input sit on its grid.
struct grid_layout {
  /// N per frame: the tokens of the maps `select` read (merged tokens after pooling).
  index_t tokens = 0;
  /// The grid of the candidates: rows * cols == tokens - prefix_tokens - suffix_tokens.
  index_t rows = 0;
  index_t cols = 0;
  /// Tokens before and after the grid (CLS first in Hugging Face CLIP, last in llama.cpp).
  index_t prefix_tokens = 0;
  index_t suffix_tokens = 0;
  /// Frames (video) or temporal patches; 1 for an image.
  index_t frames = 1;
};

/// A kept token's place: its frame, and its row and column on the grid.
struct grid_position {
  index_t frame = 0;
  index_t row = 0;
  index_t col = 0;
  friend bool operator==(const grid_position& a, const grid_position& b) {
    return a.frame == b.frame && a.row == b.row && a.col == b.col;
  }
  friend bool operator!=(const grid_position& a, const grid_position& b) { return !(a == b); }
};

/// Qwen2-VL's M-RoPE position ids (temporal, height, width) of a token.
struct mrope_position {
  index_t t = 0;
  index_t h = 0;
  index_t w = 0;
  friend bool operator==(const mrope_position& a, const mrope_position& b) {
    return a.t == b.t && a.h == b.h && a.w == b.w;
  }
  friend bool operator!=(const mrope_position& a, const mrope_position& b) { return !(a == b); }
};

/// Checks a layout: every extent >= 1 (prefix and suffix >= 0) and the grid
/// covering exactly the candidates.
inline status check_layout(const grid_layout& g) {
  using detail::fail;
  if (g.tokens < 1)
    return detail::below_one(errc::invalid_shape, g.tokens, "grid_layout.tokens");
  if (g.rows < 1 || g.cols < 1)
    return fail(errc::invalid_shape, "grid_layout.rows = ", g.rows,
                ", grid_layout.cols = ", g.cols, " (both must be >= 1)");
  if (g.frames < 1)
    return detail::below_one(errc::invalid_shape, g.frames, "grid_layout.frames");
  if (g.prefix_tokens < 0 || g.suffix_tokens < 0)
    return fail(errc::invalid_tokens, "grid_layout.prefix_tokens = ", g.prefix_tokens,
                ", grid_layout.suffix_tokens = ", g.suffix_tokens, " (both must be >= 0)");
  if (g.rows > g.tokens / g.cols || g.prefix_tokens > g.tokens || g.suffix_tokens > g.tokens ||
      g.rows * g.cols != g.tokens - g.prefix_tokens - g.suffix_tokens)
    return fail(errc::invalid_shape, "grid_layout: rows * cols = ", g.rows, " * ",
                g.cols, " does not match the candidates tokens - prefix_tokens - suffix_tokens = ",
                g.tokens, " - ", g.prefix_tokens, " - ",
                g.suffix_tokens);
  if (g.frames > std::numeric_limits<token_t>::max() / g.tokens)
    return detail::token_range("grid_layout: frames * tokens = ", g.frames, " * ", g.tokens);
  return {};
}

namespace detail {

// One index of the frame-major concatenation to its grid place.
inline status place_of(index_t index, const grid_layout& g, const char* what, std::size_t k, grid_position& out) {
  const index_t total = g.frames * g.tokens;
  if (index < 0 || index >= total)
    return fail(errc::invalid_tokens, what, "[", k, "] = ", index,
                " is outside the layout's tokens 0..", total - 1, " (frames * tokens = ",
                g.frames, " * ", g.tokens, ")");
  const index_t frame = index / g.tokens, i = index % g.tokens;
  if (i < g.prefix_tokens || i >= g.tokens - g.suffix_tokens)
    return fail(errc::invalid_tokens, what, "[", k, "] = ", index,
                " is not a grid token: token ", i, " of frame ", frame,
                " is a ", i < g.prefix_tokens ? "prefix" : "suffix", " token (the grid is tokens ",
                g.prefix_tokens, "..", g.tokens - g.suffix_tokens - 1,
                " of each frame)");
  const index_t cell = i - g.prefix_tokens;
  out = grid_position{frame, cell / g.cols, cell % g.cols};
  return {};
}

}  // namespace detail

/// The grid place of each kept index (frame-major over `frames` frames of
/// `tokens`), in the order given. Never throws; on failure `out` is empty.
inline status try_grid_positions(const std::vector<token_t>& kept, const grid_layout& g, std::vector<grid_position>& out) {
  out.clear();
  if (auto s = check_layout(g); !s) return s;
  std::vector<grid_position> result(kept.size());
  for (std::size_t k = 0; k < kept.size(); ++k)
    if (auto s = detail::place_of(kept[k], g, "kept", k, result[k]); !s) return s;
  out = std::move(result);
  return {};
}

/// The grid place of each kept index, in the order given. Throws
/// `freepruner::error` for a bad layout or an index that is not a grid token.
inline std::vector<grid_position> grid_positions(const std::vector<token_t>& kept, const grid_layout& g) {
  std::vector<grid_position> out;
  detail::check(try_grid_positions(kept, g, out));
  return out;
}

/// The grid places of per-frame selections (as a batched `select` returns
/// them: item f holds indices 0..tokens-1 of frame f), concatenated in frame
/// order. `per_frame.size()` must equal `g.frames`.
inline std::vector<grid_position> grid_positions_per_frame(const std::vector<selection>& per_frame, const grid_layout& g) {
  detail::check(check_layout(g));
  if (static_cast<index_t>(per_frame.size()) != g.frames)
    detail::raise(detail::fail(errc::invalid_shape, "per_frame has ", per_frame.size(),
                               " selections for grid_layout.frames = ", g.frames));
  grid_layout one = g;
  one.frames = 1;
  std::vector<grid_position> out;
  for (std::size_t f = 0; f < per_frame.size(); ++f) {
    const auto& kept = per_frame[f].indices;
    for (std::size_t k = 0; k < kept.size(); ++k) {
      grid_position p;
      const std::string what = "per_frame[" + std::to_string(f) + "].indices";
      detail::check(detail::place_of(kept[k], one, what.c_str(), k, p));
      p.frame = static_cast<index_t>(f);
      out.push_back(p);
    }
  }
  return out;
}

/// The index (frame-major) of a grid place: the inverse of `grid_positions`.
inline token_t token_index(const grid_position& p, const grid_layout& g) {
  detail::check(check_layout(g));
  if (p.frame < 0 || p.frame >= g.frames || p.row < 0 || p.row >= g.rows || p.col < 0 || p.col >= g.cols)
    detail::raise(detail::fail(errc::invalid_tokens, "grid_position {frame ", p.frame, ", row ",
                               p.row, ", col ", p.col,
                               "} is outside the layout's ", g.frames, " x ",
                               g.rows, " x ", g.cols, " grid"));
  return static_cast<token_t>(p.frame * g.tokens + g.prefix_tokens + p.row * g.cols + p.col);
}

/// M-RoPE position ids of the kept tokens, as Qwen2-VL gives an image or
/// video placed at text position `start`: t = start + frame,
/// h = start + row, w = start + col on the merged grid (llama.cpp's
/// mtmd-helper and Hugging Face's get_rope_index do the same). Kept tokens
/// keep these; the text after the media starts at `mrope_next_position`.
inline std::vector<mrope_position> mrope_positions(const std::vector<token_t>& kept, const grid_layout& g,
                                                   index_t start = 0) {
  if (start < 0)
    detail::raise(detail::below_zero(errc::invalid_option, start, "start"));
  const auto places = grid_positions(kept, g);
  std::vector<mrope_position> out(places.size());
  for (std::size_t k = 0; k < places.size(); ++k)
    out[k] = mrope_position{start + places[k].frame, start + places[k].row, start + places[k].col};
  return out;
}

/// The text position after media of layout `g` placed at `start`:
/// start + max(frames, rows, cols), whatever was pruned (the kept tokens keep
/// their original positions, so the span does not shrink).
inline index_t mrope_next_position(const grid_layout& g, index_t start = 0) {
  detail::check(check_layout(g));
  if (start < 0)
    detail::raise(detail::below_zero(errc::invalid_option, start, "start"));
  index_t span = g.frames > g.rows ? g.frames : g.rows;
  span = span > g.cols ? span : g.cols;
  return start + span;
}

}  // namespace freepruner
