#pragma once
/// \file presets.hpp
/// The shapes and settings of common vision encoders, so an engine does not
/// work them out again: tokens per image, where CLS sits, the patch grid,
/// which encoder layers to capture and pass to `select`, and the `options`.
/// Each preset's `source` says where its numbers come from. docs/presets.md
/// explains each one and how to use it.
///
/// Layer numbers count encoder blocks from 0, as llama.cpp's `il` and
/// Hugging Face's `attentions[i]` do. A model's `vision_feature_layer = -2`
/// (hidden_states[-2]) is the output of block L-2: `feature_layer = L - 2`.

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../detail/validate.hpp"
#include "../error.hpp"
#include "../options.hpp"
#include "../select.hpp"
#include "merge.hpp"
#include "positions.hpp"

namespace freepruner {

/// How a model merges patches into LLM tokens (when `spatial_merge` > 1).
enum class merge_layout {
  consecutive,  ///< each group is merge^2 consecutive tokens (Qwen2-VL's patch order)
  grid,         ///< each group is a merge x merge block of the row-major patch grid
};

/// One vision encoder's shape and the freepruner settings for it.
struct preset {
  /// What `presets::by_name` accepts for it.
  std::string name;
  /// N: tokens of one image, crop or frame as the encoder's attention sees them.
  index_t tokens = 0;
  /// The patch grid: grid_rows * grid_cols patch tokens.
  index_t grid_rows = 0;
  index_t grid_cols = 0;
  /// Frames (or temporal patches) per input; each is selected on its own.
  index_t frames = 1;
  /// Attention heads per layer.
  index_t heads = 0;
  /// Encoder blocks, and the block whose output the projector reads (from 0).
  index_t encoder_layers = 0;
  index_t feature_layer = 0;
  /// Encoder blocks (from 0, ascending) whose maps to capture and pass to
  /// `select` as its layers 0..L-1, in this order.
  std::vector<index_t> capture_layers;
  /// Patches merged per side into one LLM token (1: none; 2: 2x2), and how
  /// the merged groups lie in the encoder's token order.
  index_t spatial_merge = 1;
  merge_layout merge_groups = merge_layout::consecutive;
  /// The options to pass to `select`: CLS as prefix or suffix, and layer
  /// choices that index `capture_layers`. With spatial_merge > 1 they apply
  /// to the merged maps (`merge_maps`).
  options select_options;
  /// Where the numbers come from.
  std::string source;

  index_t prefix_tokens() const noexcept { return select_options.prefix_tokens; }
  index_t suffix_tokens() const noexcept { return select_options.suffix_tokens; }
  /// Tokens of the maps `select` reads: N, or N / merge^2 after `merge_maps`.
  index_t select_tokens() const noexcept { return tokens / (spatial_merge * spatial_merge); }
  /// Tokens per image/crop/frame the LLM sees without pruning (the candidates).
  index_t llm_tokens() const noexcept { return select_tokens() - prefix_tokens() - suffix_tokens(); }
  /// The grid of what `select` returns (the merged grid when merged), for positions.hpp.
  grid_layout layout() const {
    grid_layout g;
    g.tokens = select_tokens();
    g.rows = spatial_merge > 0 ? grid_rows / spatial_merge : 0;
    g.cols = spatial_merge > 0 ? grid_cols / spatial_merge : 0;
    g.prefix_tokens = prefix_tokens();
    g.suffix_tokens = suffix_tokens();
    g.frames = frames;
    return g;
  }
  /// The exact count `select` keeps per image/crop/frame for this budget
  /// (empty for `budget::adaptive()`): the LLM tokens to reserve at tokenize time.
  std::optional<index_t> kept_tokens(const budget& b) const {
    return freepruner::kept_tokens(b, select_tokens(), select_options);
  }
  /// The same encoder with CLS after the patches (name + "-cls-last").
  /// Unchanged when there is no CLS. llama.cpp's LLaVA graph appends CLS
  /// but also drops patch 0: see docs/integration-llama.cpp.md.
  preset with_cls_last() const {
    preset p = *this;
    if (p.select_options.prefix_tokens >= 1) {
      --p.select_options.prefix_tokens;
      ++p.select_options.suffix_tokens;
      p.name += "-cls-last";
    }
    return p;
  }
  /// Pools maps [L][H][N][N] to the merged tokens (merge.hpp) into `out`;
  /// select on the returned view. For spatial_merge = 1 it is a copy.
  template <class Tensor, class Out>
  attention_view<const Out> merge_maps(const Tensor& maps, std::vector<Out>& out) const {
    if (merge_groups == merge_layout::grid) return merge_attention_grid(maps, grid_rows, grid_cols, spatial_merge, out);
    return merge_attention(maps, spatial_merge * spatial_merge, out);
  }
};

/// Checks that a preset is self-consistent: the grid and CLS add up to the
/// tokens, the merge divides the grid, the capture layers run (none after
/// the feature layer) and the options fit them. Never throws.
inline status check_preset(const preset& p) {
  using detail::fail;
  const std::string who = "preset \"" + p.name + "\": ";
  if (p.name.empty()) return fail(errc::invalid_option, "preset name is empty");
  if (p.tokens < 1 || p.grid_rows < 1 || p.grid_cols < 1 || p.frames < 1 || p.heads < 1 || p.encoder_layers < 1)
    return fail(errc::invalid_shape, who, "tokens = ", p.tokens, ", grid_rows = ",
                p.grid_rows, ", grid_cols = ", p.grid_cols,
                ", frames = ", p.frames, ", heads = ", p.heads,
                ", encoder_layers = ", p.encoder_layers, " (each must be >= 1)");
  if (auto s = detail::check_options(p.select_options); !s) return fail(s.code(), who, s.message().substr(12));
  if (p.spatial_merge < 1)
    return detail::below_one(errc::invalid_shape, p.spatial_merge, who, "spatial_merge");
  if (p.grid_rows % p.spatial_merge != 0 || p.grid_cols % p.spatial_merge != 0)
    return fail(errc::invalid_shape, who, "spatial_merge = ", p.spatial_merge,
                " does not divide grid_rows = ", p.grid_rows, " and grid_cols = ",
                p.grid_cols);
  if (p.spatial_merge > 1 && (p.prefix_tokens() != 0 || p.suffix_tokens() != 0))
    return fail(errc::invalid_tokens, who, "prefix_tokens = ", p.prefix_tokens(),
                ", suffix_tokens = ", p.suffix_tokens(),
                ": merging pools every token, so a merged preset has none");
  if (p.grid_rows > p.tokens / p.grid_cols ||
      p.grid_rows * p.grid_cols + p.prefix_tokens() + p.suffix_tokens() != p.tokens)
    return fail(errc::invalid_shape, who, "grid_rows * grid_cols + prefix + suffix = ",
                p.grid_rows, " * ", p.grid_cols, " + ",
                p.prefix_tokens(), " + ", p.suffix_tokens(),
                " does not match tokens = ", p.tokens);
  if (p.feature_layer < 0 || p.feature_layer >= p.encoder_layers)
    return fail(errc::invalid_layer, who, "feature_layer = ", p.feature_layer,
                " is outside the encoder's layers 0..", p.encoder_layers - 1);
  if (p.capture_layers.empty()) return fail(errc::invalid_layer, who, "capture_layers is empty (need at least one)");
  for (std::size_t k = 0; k < p.capture_layers.size(); ++k) {
    const index_t l = p.capture_layers[k];
    if (l < 0 || l > p.feature_layer)
      return fail(errc::invalid_layer, who, "capture_layers[", k, "] = ", l,
                  " is outside 0..feature_layer = 0..", p.feature_layer,
                  " (layers after the feature layer do not shape the output, and llama.cpp does not run them)");
    if (k > 0 && l <= p.capture_layers[k - 1])
      return fail(errc::invalid_layer, who, "capture_layers[", k, "] = ", l,
                  " does not follow capture_layers[", k - 1,
                  "] = ", p.capture_layers[k - 1], " (they must be ascending, each once)");
  }
  detail::plan plan;
  const index_t n = p.select_tokens();
  if (auto s = detail::make_plan({static_cast<index_t>(p.capture_layers.size()), p.heads, n, n}, p.select_options, plan); !s)
    return fail(s.code(), who, s.message().substr(12));
  return {};
}

/// The presets; each call returns a fresh `preset`.
namespace presets {

namespace detail {

inline preset clip_336(std::string name, std::string source) {
  preset p;
  p.name = std::move(name);
  p.tokens = 577;  // CLS + 24 x 24 patches
  p.grid_rows = 24;
  p.grid_cols = 24;
  p.heads = 16;
  p.encoder_layers = 24;
  p.feature_layer = 22;         // vision_feature_layer -2
  p.capture_layers = {21, 22};  // pivots from both, complements from 22 (the last given)
  p.select_options.prefix_tokens = 1;
  p.source = std::move(source);
  return p;
}

}  // namespace detail

/// LLaVA-1.5: CLIP ViT-L/14 at 336 px, CLS first (Hugging Face order).
inline preset llava_1_5() {
  return detail::clip_336(
      "llava-1.5",
      "LLaVA-1.5 (liuhaotian/llava-v1.5-7b/13b, llava-hf/llava-1.5-7b-hf): vision tower "
      "openai/clip-vit-large-patch14-336, image_size 336, patch_size 14 -> 24 x 24 = 576 patches + CLS = 577 "
      "tokens, num_hidden_layers 24, num_attention_heads 16; mm_vision_select_layer / vision_feature_layer -2 "
      "(hidden_states[-2], the output of block 22) and vision_feature_select_strategy \"default\" (CLS dropped): "
      "the LLM sees 576 tokens. Complementary tokens from the penultimate layer, block 22, as the freePruner paper "
      "(arXiv 2411.15446) does; capturing block 21 too for pivots is this library's choice.");
}

/// LLaVA-NeXT (1.6) AnyRes: one 336 px crop; select each crop on its own.
inline preset llava_next_crop() {
  return detail::clip_336(
      "llava-next-crop",
      "LLaVA-NeXT / LLaVA-1.6 (llava-hf/llava-v1.6-*): the same CLIP ViT-L/14-336 tower and vision_feature_layer -2 "
      "as LLaVA-1.5; AnyRes picks a resolution from image_grid_pinpoints [[336,672],[672,336],[672,672],"
      "[1008,336],[336,1008]], cuts it into 336 x 336 crops and adds the resized full image; each crop is encoded "
      "alone as 577 tokens (CLS + 24 x 24), so this preset is per crop: pass the crops as a batched view. "
      "Unpadding and the image_newline tokens come after selection and are the engine's.");
}

/// Video-LLaVA: LanguageBind's ViT-L/14 at 224 px, 8 frames of 257 tokens.
inline preset video_llava() {
  preset p;
  p.name = "video-llava";
  p.tokens = 257;  // CLS + 16 x 16 patches per frame
  p.grid_rows = 16;
  p.grid_cols = 16;
  p.frames = 8;
  p.heads = 16;
  p.encoder_layers = 24;
  p.feature_layer = 22;
  p.capture_layers = {21, 22};
  p.select_options.prefix_tokens = 1;
  p.source =
      "Video-LLaVA (LanguageBind/Video-LLaVA-7B, -hf): video tower LanguageBind_Video_merge, a CLIP ViT-L/14 at "
      "224 px (image_size 224, patch_size 14 -> 16 x 16 = 256 patches + CLS = 257 tokens per frame, 24 layers, "
      "16 heads); 8 frames per video (num_frames 8), each frame encoded alone; vision_feature_layer -2 (block 22), "
      "CLS dropped: the LLM sees 8 x 256 = 2048 tokens. Select per frame with a batched view of 8 items.";
  return p;
}

/// SigLIP so400m at 384 px: 27 x 27 = 729 tokens, no CLS.
inline preset siglip_so400m() {
  preset p;
  p.name = "siglip-so400m";
  p.tokens = 729;
  p.grid_rows = 27;
  p.grid_cols = 27;
  p.heads = 16;
  p.encoder_layers = 27;
  p.feature_layer = 26;  // the last block
  p.capture_layers = {25, 26};
  p.source =
      "google/siglip-so400m-patch14-384: image_size 384, patch_size 14 -> 27 x 27 = 729 tokens, no class token "
      "(SigLIP pools with an attention head, not CLS), num_hidden_layers 27, num_attention_heads 16. The feature "
      "layer here is the last block (26), as in LMMs that take the encoder's final output (vision_feature_layer -1); "
      "an LMM that takes another layer needs feature_layer and capture_layers set to it.";
  return p;
}

/// Qwen2-VL for an image of grid_rows x grid_cols patches of 14 px (both
/// even: the processor resizes to multiples of 28), and `temporal_patches`
/// temporal patches (1 for an image; frames / 2 for a video). Select on
/// `merge_maps` of the encoder's maps: the budget then counts LLM tokens.
inline preset qwen2_vl(index_t grid_rows, index_t grid_cols, index_t temporal_patches = 1) {
  using freepruner::detail::fail;
  for (const auto& side : {std::make_pair("grid_rows", grid_rows), std::make_pair("grid_cols", grid_cols)})
    if (side.second < 2 || side.second % 2 != 0 || side.second > 46340)
      freepruner::detail::raise(fail(errc::invalid_shape, "qwen2_vl: ", side.first, " = ", side.second,
                                     " (must be even, 2..46340: Qwen2-VL resizes images to multiples of 28 px = "
                                     "2 x its 14 px patch)"));
  if (temporal_patches < 1)
    freepruner::detail::raise(freepruner::detail::below_one(errc::invalid_shape, temporal_patches, "qwen2_vl: temporal_patches"));
  preset p;
  p.name = "qwen2-vl:" + std::to_string(grid_rows) + "x" + std::to_string(grid_cols);
  p.tokens = grid_rows * grid_cols;
  p.grid_rows = grid_rows;
  p.grid_cols = grid_cols;
  p.frames = temporal_patches;
  p.heads = 16;
  p.encoder_layers = 32;
  p.feature_layer = 31;  // the merger reads the last block's output
  p.capture_layers = {30, 31};
  p.spatial_merge = 2;
  p.merge_groups = merge_layout::consecutive;
  p.source =
      "Qwen2-VL (Qwen/Qwen2-VL-*-Instruct) vision_config: patch_size 14, spatial_merge_size 2, temporal_patch_size 2, "
      "depth 32, num_heads 16, no class token. The grid is (height / 14) x (width / 14) after the processor resizes "
      "to multiples of 28, so both sides are even. Patches are ordered so that each 2 x 2 merge group is 4 "
      "consecutive tokens (the PatchMerger reshapes to 4 x 1280 per LLM token; llama.cpp's qwen2vl graph permutes "
      "to the same order), and the LLM sees (rows / 2) x (cols / 2) tokens with M-RoPE positions (t, h, w) on that "
      "merged grid. Attention runs within one temporal patch (2 frames). The merger reads the last block (31).";
  return p;
}

/// Names `by_name` accepts.
inline std::vector<std::string> names() {
  return {"llava-1.5",   "llava-1.5-cls-last",   "llava-next-crop", "llava-next-crop-cls-last",
          "video-llava", "video-llava-cls-last", "siglip-so400m",   "qwen2-vl:<rows>x<cols>"};
}

namespace detail {

// A decimal count of at most 6 digits, else -1.
inline index_t parse_count(std::string_view s) {
  if (s.empty() || s.size() > 6) return -1;
  index_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

[[noreturn]] inline void unknown(std::string_view name) {
  std::string known;
  for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
  freepruner::detail::raise(freepruner::detail::fail(errc::invalid_option, "preset name = \"", std::string(name),
                                                     "\" is not known (known: ", known, ")"));
}

}  // namespace detail

/// The preset called `name` (see `names()`; "qwen2-vl:32x32" is Qwen2-VL on
/// a 32 x 32 patch grid). Throws `freepruner::error` naming the known ones.
inline preset by_name(std::string_view name) {
  constexpr std::string_view qwen = "qwen2-vl:", cls_last = "-cls-last";
  if (name.substr(0, qwen.size()) == qwen) {
    const auto grid = name.substr(qwen.size());
    const auto x = grid.find('x');
    if (x == std::string_view::npos) detail::unknown(name);
    const index_t rows = detail::parse_count(grid.substr(0, x)), cols = detail::parse_count(grid.substr(x + 1));
    if (rows < 0 || cols < 0) detail::unknown(name);
    return qwen2_vl(rows, cols);
  }
  std::string_view base = name;
  const bool last = base.size() > cls_last.size() && base.substr(base.size() - cls_last.size()) == cls_last;
  if (last) base.remove_suffix(cls_last.size());
  preset p;
  if (base == "llava-1.5") {
    p = llava_1_5();
  } else if (base == "llava-next-crop") {
    p = llava_next_crop();
  } else if (base == "video-llava") {
    p = video_llava();
  } else if (base == "siglip-so400m" && !last) {
    return siglip_so400m();
  } else {
    detail::unknown(name);
  }
  return last ? p.with_cls_last() : p;
}

}  // namespace presets
}  // namespace freepruner
