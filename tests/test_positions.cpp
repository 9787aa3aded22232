// Kept indices to grid places (positions.hpp): every index of random layouts
// against a place computed here independently, the round trip back to the
// index, the presets' layouts (CLS first and last, video frames, the merged
// Qwen2-VL grid), M-RoPE ids, and every bad input.

#include <catch2/catch.hpp>

#include <freepruner/freepruner.hpp>
#include <freepruner/extras/positions.hpp>
#include <freepruner/extras/presets.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "common.hpp"

namespace fp = freepruner;
using fp::errc;
using fp::index_t;
using Catch::Matchers::Contains;

namespace {

template <class F>
void require_error(F&& call, errc code, const std::string& text) {
  try {
    call();
    FAIL("no error for: " << text);
  } catch (const fp::error& e) {
    CHECK(e.code() == code);
    CHECK_THAT(e.what(), Contains(text));
  }
}

fp::grid_layout random_layout() {
  fp::grid_layout g;
  g.rows = fptest::uniform_int(1, 9);
  g.cols = fptest::uniform_int(1, 9);
  g.prefix_tokens = fptest::uniform_int(0, 2);
  g.suffix_tokens = fptest::uniform_int(0, 2);
  g.tokens = g.rows * g.cols + g.prefix_tokens + g.suffix_tokens;
  g.frames = fptest::uniform_int(1, 4);
  return g;
}

}  // namespace

TEST_CASE("grid positions of every grid token, and back", "[positions]") {
  for (int trial = 0; trial < 200; ++trial) {
    const auto g = random_layout();
    INFO("rows=" << g.rows << " cols=" << g.cols << " prefix=" << g.prefix_tokens << " suffix=" << g.suffix_tokens
                 << " frames=" << g.frames);
    REQUIRE(fp::check_layout(g).ok());
    // Walk the frames and the grid in order: the expected place of each index.
    std::vector<fp::token_t> all;
    std::vector<fp::grid_position> want;
    for (index_t f = 0; f < g.frames; ++f)
      for (index_t r = 0; r < g.rows; ++r)
        for (index_t c = 0; c < g.cols; ++c) {
          all.push_back(static_cast<fp::token_t>(f * g.tokens + g.prefix_tokens + r * g.cols + c));
          want.push_back(fp::grid_position{f, r, c});
        }
    // A random subset in a random order.
    std::vector<std::size_t> pick;
    for (std::size_t k = 0; k < all.size(); ++k)
      if (fptest::uniform_int(0, 2) > 0) pick.push_back(k);
    std::shuffle(pick.begin(), pick.end(), fptest::rng());
    std::vector<fp::token_t> kept;
    for (std::size_t k : pick) kept.push_back(all[k]);
    const auto got = fp::grid_positions(kept, g);
    REQUIRE(got.size() == kept.size());
    for (std::size_t k = 0; k < pick.size(); ++k) {
      REQUIRE(got[k] == want[pick[k]]);
      REQUIRE(fp::token_index(got[k], g) == kept[k]);
    }
    // One selection per frame gives the same places.
    std::vector<fp::selection> per_frame(static_cast<std::size_t>(g.frames));
    std::vector<fp::token_t> concatenated;
    for (fp::token_t t : all)
      if (fptest::uniform_int(0, 1) == 1) {
        per_frame[static_cast<std::size_t>(t / g.tokens)].indices.push_back(static_cast<fp::token_t>(t % g.tokens));
        concatenated.push_back(t);
      }
    CHECK(fp::grid_positions_per_frame(per_frame, g) == fp::grid_positions(concatenated, g));
  }
}

TEST_CASE("positions on the presets' layouts", "[positions][presets]") {
  const auto llava = fp::presets::llava_1_5().layout();
  CHECK(fp::grid_positions({1, 24, 25, 576}, llava) ==
        std::vector<fp::grid_position>{{0, 0, 0}, {0, 0, 23}, {0, 1, 0}, {0, 23, 23}});
  // llama.cpp's order: patches first, CLS last.
  const auto last = fp::presets::by_name("llava-1.5-cls-last").layout();
  CHECK(fp::grid_positions({0, 575}, last) == std::vector<fp::grid_position>{{0, 0, 0}, {0, 23, 23}});
  require_error([&] { (void)fp::grid_positions({576}, last); }, errc::invalid_tokens,
                "kept[0] = 576 is not a grid token: token 576 of frame 0 is a suffix token (the grid is tokens 0..575");
  require_error([&] { (void)fp::grid_positions({5, 0}, llava); }, errc::invalid_tokens,
                "kept[1] = 0 is not a grid token: token 0 of frame 0 is a prefix token (the grid is tokens 1..576");

  // Video-LLaVA: 8 frames of CLS + 16 x 16.
  const auto video = fp::presets::video_llava().layout();
  CHECK(video.frames == 8);
  CHECK(fp::grid_positions({257 * 7 + 1 + 16 * 3 + 2}, video) == std::vector<fp::grid_position>{{7, 3, 2}});
  std::vector<fp::selection> frames(8);
  frames[2].indices = {1, 256};
  CHECK(fp::grid_positions_per_frame(frames, video) == std::vector<fp::grid_position>{{2, 0, 0}, {2, 15, 15}});

  // Qwen2-VL 32 x 44 patches: merged tokens on a 16 x 22 grid.
  const auto qwen = fp::presets::qwen2_vl(32, 44).layout();
  CHECK(qwen.tokens == 16 * 22);
  CHECK(fp::grid_positions({0, 21, 22, 351}, qwen) ==
        std::vector<fp::grid_position>{{0, 0, 0}, {0, 0, 21}, {0, 1, 0}, {0, 15, 21}});
}

TEST_CASE("M-RoPE positions keep the merged grid's (t, h, w)", "[positions]") {
  const auto g = fp::presets::qwen2_vl(8, 12, 3).layout();  // 4 x 6 merged, 3 temporal patches
  REQUIRE(g.tokens == 24);
  std::vector<fp::token_t> kept;
  for (fp::token_t t = 0; t < 72; t += 5) kept.push_back(t);
  const index_t start = 17;
  const auto ids = fp::mrope_positions(kept, g, start);
  REQUIRE(ids.size() == kept.size());
  for (std::size_t k = 0; k < kept.size(); ++k) {
    const index_t frame = kept[k] / 24, cell = kept[k] % 24;
    CHECK(ids[k] == fp::mrope_position{start + frame, start + cell / 6, start + cell % 6});
  }
  CHECK(fp::mrope_next_position(g, start) == start + 6);  // max(3 frames, 4 rows, 6 cols)
  CHECK(fp::mrope_positions({}, g).empty());
  fp::grid_layout tall = g;
  tall.rows = 6;
  tall.cols = 4;
  tall.frames = 9;
  CHECK(fp::mrope_next_position(tall) == 9);
  require_error([&] { (void)fp::mrope_positions({0}, g, -1); }, errc::invalid_option, "start = -1");
  require_error([&] { (void)fp::mrope_next_position(g, -3); }, errc::invalid_option, "start = -3");
  require_error([&] { (void)fp::mrope_positions({72}, g, 0); }, errc::invalid_tokens, "kept[0] = 72 is outside");
}

TEST_CASE("positions reject bad layouts and indices", "[positions][errors]") {
  fp::grid_layout g{577, 24, 24, 1, 0, 1};
  REQUIRE(fp::check_layout(g).ok());
  struct bad_case {
    fp::grid_layout layout;
    errc code;
    const char* text;
  };
  const bad_case cases[] = {
      {{577, 24, 23, 1, 0, 1}, errc::invalid_shape, "rows * cols = 24 * 23 does not match the candidates tokens - "
                                                    "prefix_tokens - suffix_tokens = 577 - 1 - 0"},
      {{577, 24, 24, 0, 0, 1}, errc::invalid_shape, "= 577 - 0 - 0"},
      {{577, 24, 24, 1, 1, 1}, errc::invalid_shape, "= 577 - 1 - 1"},
      {{0, 24, 24, 1, 0, 1}, errc::invalid_shape, "grid_layout.tokens = 0"},
      {{577, 0, 24, 1, 0, 1}, errc::invalid_shape, "grid_layout.rows = 0"},
      {{577, 24, -1, 1, 0, 1}, errc::invalid_shape, "grid_layout.cols = -1"},
      {{577, 24, 24, 1, 0, 0}, errc::invalid_shape, "grid_layout.frames = 0"},
      {{577, 24, 24, -1, 0, 1}, errc::invalid_tokens, "grid_layout.prefix_tokens = -1"},
      {{577, 24, 24, 1, -2, 1}, errc::invalid_tokens, "grid_layout.suffix_tokens = -2"},
      {{4, std::numeric_limits<index_t>::max(), 2, 0, 0, 1}, errc::invalid_shape, "does not match"},
      {{2, 1, 1, 1, std::numeric_limits<index_t>::max(), 1}, errc::invalid_shape, "does not match"},
      {{1 << 20, 1 << 10, 1 << 10, 0, 0, 1 << 12}, errc::invalid_shape, "exceeds the 32-bit token range"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    const auto s = fp::check_layout(c.layout);
    CHECK(s.code() == c.code);
    CHECK_THAT(s.message(), Contains(c.text));
    require_error([&] { (void)fp::grid_positions({1}, c.layout); }, c.code, c.text);
    require_error([&] { (void)fp::token_index({0, 0, 0}, c.layout); }, c.code, c.text);
  }
  require_error([&] { (void)fp::grid_positions({1, 577}, g); }, errc::invalid_tokens,
                "kept[1] = 577 is outside the layout's tokens 0..576 (frames * tokens = 1 * 577)");
  require_error([&] { (void)fp::grid_positions({-3}, g); }, errc::invalid_tokens, "kept[0] = -3 is outside");
  std::vector<fp::grid_position> out{{1, 2, 3}};
  CHECK(!fp::try_grid_positions({-3}, g, out).ok());
  CHECK(out.empty());
  CHECK(fp::try_grid_positions({1}, g, out).ok());
  CHECK(out == std::vector<fp::grid_position>{{0, 0, 0}});

  std::vector<fp::selection> two(2);
  require_error([&] { (void)fp::grid_positions_per_frame(two, g); }, errc::invalid_shape,
                "per_frame has 2 selections for grid_layout.frames = 1");
  std::vector<fp::selection> one(1);
  one[0].indices = {1, 0};
  require_error([&] { (void)fp::grid_positions_per_frame(one, g); }, errc::invalid_tokens,
                "per_frame[0].indices[1] = 0 is not a grid token");
  one[0].indices = {600};
  require_error([&] { (void)fp::grid_positions_per_frame(one, g); }, errc::invalid_tokens, "per_frame[0].indices[0] = 600 is outside");

  require_error([&] { (void)fp::token_index({0, 24, 0}, g); }, errc::invalid_tokens,
                "grid_position {frame 0, row 24, col 0} is outside the layout's 1 x 24 x 24 grid");
  require_error([&] { (void)fp::token_index({1, 0, 0}, g); }, errc::invalid_tokens, "{frame 1, row 0, col 0}");
  require_error([&] { (void)fp::token_index({0, 0, -1}, g); }, errc::invalid_tokens, "col -1}");
}
