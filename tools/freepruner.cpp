// freepruner: selects the visual tokens to keep from attention maps that
// numpy saved (.npy, .npz), prints them, and draws the patch grid.
// docs/cli.md is the manual. Exit codes: 0 done, 1 an input or data error
// (a file, its contents, or options that do not fit it), 2 a usage error
// (the command line alone is wrong).

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <freepruner/freepruner.hpp>
#include <freepruner/extras/presets.hpp>

#include "npy.hpp"


#ifndef FREEPRUNER_TOOL_HAVE_STB
#define FREEPRUNER_TOOL_HAVE_STB 0
#endif
#if FREEPRUNER_TOOL_HAVE_STB
#include "picture.hpp"
#endif

namespace freepruner_tool {

using freepruner::index_t;
using freepruner::token_t;

/// One input's maps, each layer its own [heads][tokens][tokens] block: the
/// layers of an .npz live in separate buffers, and --layers picks any of a
/// .npy's, so neither is copied.
template <class T>
struct layer_maps {
  std::vector<const T*> layers;
  index_t heads = 0, tokens = 0;
};

}  // namespace freepruner_tool

namespace freepruner {
template <class T>
struct attention_traits<freepruner_tool::layer_maps<T>> {
  using value_type = T;
  static std::array<index_t, 4> extents(const freepruner_tool::layer_maps<T>& m) {
    return {static_cast<index_t>(m.layers.size()), m.heads, m.tokens, m.tokens};
  }
  static const T* row(const freepruner_tool::layer_maps<T>& m, index_t l, index_t h, index_t i) {
    return m.layers[static_cast<std::size_t>(l)] + (h * m.tokens + i) * m.tokens;
  }
  static index_t key_stride(const freepruner_tool::layer_maps<T>&) { return 1; }
};
}  // namespace freepruner

namespace freepruner_tool {
namespace {

constexpr int exit_data = 1, exit_usage = 2;

/// A failure with its exit code; main prints "freepruner: <message>".
struct failure : std::runtime_error {
  failure(int code_, const std::string& what) : std::runtime_error(what), code(code_) {}
  int code;
};
[[noreturn]] void usage_error(const std::string& what) { throw failure(exit_usage, what); }
[[noreturn]] void data_error(const std::string& what) { throw failure(exit_data, what); }

/// A value from the command line or a file, safe to quote in a message or
/// on stdout: control and non-ASCII bytes escaped, at most 200 of them.
std::string shown(const std::string& text) { return npy::printable(text, 200); }

/// All of `text` to stdout, flushed: an error (a full disk, a closed pipe) is exit 1.
void write_stdout(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    data_error(std::string("standard output: cannot write: ") + std::strerror(errno));
}

/// What the tool is doing, for a message should memory run out.
std::string stage = "reading the command line";

const char* const help_text = R"(usage: freepruner MAPS [options]

Selects the visual tokens to keep (freePruner, docs/SPEC.md) from a vision
encoder's attention maps, and prints their positions.

MAPS  a .npy of float16/float32/float64 maps shaped [L,H,N,N], [L,N,N],
      [N,N] or a batch [B,L,H,N,N]; or a .npz of per-layer arrays (as
      numpy.savez writes them; savez_compressed too) each [H,N,N], [N,N] or
      [B,H,N,N], layers in order arr_0, arr_1, ... (or the archive's order).

budget (one of; default adaptive):
  --budget adaptive        keep the pivotal and complementary tokens
  --count M                keep exactly min(M, candidates) tokens
  --ratio X                keep max(1, floor(X * candidates + 0.5)), 0 < X <= 1
options:
  --prefix A               tokens 0..A-1 are never kept (CLS first: 1) [0]
  --suffix B               the last B tokens are never kept (CLS last: 1) [0]
  --pivots-per-layer K     0: outliers of each layer; K: its top K [0]
  --fence F                outlier fence Q3 + F * (Q3 - Q1) [1.5]
  --from row|column        complementary scores of a pivot's row or column [row]
  --complementary-layer C  which used layer gives complements (-1: the last) [-1]
  --pivot-layers LIST      which used layers pick pivots, e.g. 0,2,-1 [all]
  --layers LIST            which of the file's layers to use, e.g. 22,23 or -2
                           or 10:-1 (Python indices and slices) [all]
  --preset NAME            a model's options, layers and grid (docs/presets.md),
                           under the flags given
output:
  --json                   {"tokens","candidates","kept","pivotal","complementary"}
                           (a list of them for a batch)
  --verbose, -v            also the pivotal/complementary split and the grid
  --png OUT.png            draw the patch grid (item b of a batch: OUT_b.png)
  --image PHOTO            ... over this picture (PNG, JPEG, BMP, PGM/PPM)
  --fit crop|pad|stretch   how the picture is laid on the grid [crop]
  --grid RxC               the patch grid [square root of the candidates]
  --cell PX                pixels per patch [16, or the picture's resolution]
limits (checked before memory is taken; K, M, G, T suffixes are powers of 1024):
  --max-bytes SIZE         map data read into memory, all arrays together [8G]
  --max-batch B            items of a batch [65536]
  --max-pixels P           pixels of the --image picture [64M]
  --help, -h               this text
  --version                the version

exit: 0 done, 1 an input or data error, 2 a usage error.
)";

// ---------------------------------------------------------------------------
// The command line

struct command {
  std::string input;
  freepruner::budget budget = freepruner::budget::adaptive();
  std::string budget_flag;  // the flag that set it, for conflicts
  freepruner::options options;
  std::optional<long long> complementary_layer;  // Python-style, resolved against the used layers
  std::optional<std::vector<long long>> pivot_layers;
  std::string layers;  // --layers, resolved once the file's layer count is known
  bool json = false, verbose = false;
  std::string png, image, preset;
  std::string fit = "crop";
  long long grid_rows = 0, grid_cols = 0, cell = 0;
  std::string grid_from = "--grid";    // or the preset, for messages
  std::vector<std::string> given;      // option flags on the command line: they override a preset
  npy::limits limits;
  long long max_batch = 65536;
  std::uint64_t max_pixels = std::uint64_t{1} << 26;
  std::optional<freepruner::preset> model;
};

// Whole text as a decimal integer; false if it is not one (or overflows).
bool to_integer(const std::string& text, long long& v) {
  errno = 0;
  char* end = nullptr;
  v = std::strtoll(text.c_str(), &end, 10);
  return !text.empty() && end == text.c_str() + text.size() && !std::isspace(static_cast<unsigned char>(text[0])) &&
         errno != ERANGE;
}

long long parse_integer(const std::string& flag, const std::string& text, long long lo, long long hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || std::isspace(static_cast<unsigned char>(text[0])))
    usage_error(flag + " '" + shown(text) + "' is not an integer");
  if (errno == ERANGE || v < lo || v > hi)
    usage_error(flag + " " + shown(text) + " is out of range (" + std::to_string(lo) + ".." + std::to_string(hi) + ")");
  return v;
}

// An amount with an optional K, M, G or T suffix (powers of 1024), 1..2^62.
std::uint64_t parse_amount(const std::string& flag, const std::string& text) {
  const std::string units = "KMGT";
  const std::size_t unit = text.empty() ? std::string::npos : units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(text.back()))));
  const std::string digits = unit == std::string::npos ? text : text.substr(0, text.size() - 1);
  long long v = 0;
  if (!to_integer(digits, v) || v < 1)
    usage_error(flag + " '" + shown(text) + "' is not a positive integer with an optional K, M, G or T suffix");
  const int shift = unit == std::string::npos ? 0 : 10 * static_cast<int>(unit + 1);
  if (static_cast<std::uint64_t>(v) > (std::uint64_t{1} << 62) >> shift)
    usage_error(flag + " " + shown(text) + " is out of range (at most 2^62)");
  return static_cast<std::uint64_t>(v) << shift;
}

double parse_number(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || std::isspace(static_cast<unsigned char>(text[0])))
    usage_error(flag + " '" + shown(text) + "' is not a number");
  if (!std::isfinite(v)) usage_error(flag + " " + shown(text) + " must be finite");
  return v;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t at = text.find(sep, start);
    out.push_back(text.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

constexpr long long max_index = std::numeric_limits<token_t>::max();

void set_budget(command& c, const std::string& flag, freepruner::budget b) {
  if (!c.budget_flag.empty() && c.budget_flag != flag)
    usage_error(flag + " and " + c.budget_flag + " both set the budget; give one");
  c.budget_flag = flag;
  c.budget = b;
}

command parse_command(int argc, char** argv) {
  command c;
  bool inputs_only = false;
  for (int k = 1; k < argc; ++k) {
    std::string arg = argv[k];
    if (inputs_only || arg.size() < 2 || arg[0] != '-') {
      if (!c.input.empty()) usage_error("more than one input file ('" + shown(c.input) + "', '" + shown(arg) + "')");
      c.input = arg;
      continue;
    }
    if (arg == "--") {
      inputs_only = true;
      continue;
    }
    std::optional<std::string> inline_value;
    if (const auto eq = arg.find('='); arg.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    const auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (k + 1 >= argc) usage_error(shown(arg) + " needs a value (see --help)");
      return argv[++k];
    };
    const auto no_value = [&] {
      if (inline_value) usage_error(shown(arg) + " takes no value");
    };
    if (arg == "--help" || arg == "-h") {
      no_value();
      write_stdout(help_text);
      std::exit(0);
    } else if (arg == "--version") {
      no_value();
      write_stdout(std::string("freepruner ") + FREEPRUNER_VERSION_STRING + "\n");
      std::exit(0);
    } else if (arg == "--budget") {
      const std::string v = value();
      if (v != "adaptive") usage_error("--budget '" + shown(v) + "': only 'adaptive' (use --count M or --ratio X for a fixed budget)");
      set_budget(c, arg, freepruner::budget::adaptive());
    } else if (arg == "--count") {
      set_budget(c, arg, freepruner::budget::count(parse_integer(arg, value(), 1, max_index)));
    } else if (arg == "--ratio") {
      const std::string v = value();
      const double x = parse_number(arg, v);
      if (!(x > 0 && x <= 1)) usage_error("--ratio " + shown(v) + " is outside (0, 1]");
      set_budget(c, arg, freepruner::budget::ratio(x));
    } else if (arg == "--prefix") {
      c.options.prefix_tokens = parse_integer(arg, value(), 0, max_index);
      c.given.push_back(arg);
    } else if (arg == "--suffix") {
      c.options.suffix_tokens = parse_integer(arg, value(), 0, max_index);
      c.given.push_back(arg);
    } else if (arg == "--pivots-per-layer") {
      c.options.pivots_per_layer = parse_integer(arg, value(), 0, max_index);
      c.given.push_back(arg);
    } else if (arg == "--fence") {
      const std::string v = value();
      const double f = parse_number(arg, v);
      if (f < 0) usage_error("--fence " + shown(v) + " must be >= 0");
      c.options.fence_factor = f;
      c.given.push_back(arg);
    } else if (arg == "--from") {
      const std::string v = value();
      if (v == "row") c.options.complementary_from = freepruner::direction::row;
      else if (v == "column") c.options.complementary_from = freepruner::direction::column;
      else usage_error("--from '" + shown(v) + "': 'row' or 'column'");
      c.given.push_back(arg);
    } else if (arg == "--complementary-layer") {
      c.complementary_layer = parse_integer(arg, value(), -max_index, max_index);
    } else if (arg == "--pivot-layers") {
      std::vector<long long> list;
      for (const auto& item : split(value(), ',')) list.push_back(parse_integer(arg, item, -max_index, max_index));
      c.pivot_layers = list;
    } else if (arg == "--layers") {
      c.layers = value();
      if (c.layers.empty()) usage_error("--layers needs a list, e.g. 22,23 or -2 or 10:-1");
      for (const auto& item : split(c.layers, ',')) {  // the syntax now; the range once the file is read
        const auto bounds = split(item, ':');
        if (bounds.size() > 2) usage_error("--layers " + shown(item) + ": a slice is a:b, without a step");
        for (const auto& bound : bounds)
          if (!bound.empty() || bounds.size() == 1) parse_integer(arg, bound, -max_index, max_index);
      }
    } else if (arg == "--json") {
      no_value();
      c.json = true;
    } else if (arg == "--verbose" || arg == "-v") {
      no_value();
      c.verbose = true;
    } else if (arg == "--png") {
      c.png = value();
      if (c.png.empty()) usage_error("--png needs a file name");
    } else if (arg == "--image") {
      c.image = value();
      if (c.image.empty()) usage_error("--image needs a file name");
    } else if (arg == "--fit") {
      c.fit = value();
      if (c.fit != "crop" && c.fit != "pad" && c.fit != "stretch")
        usage_error("--fit '" + shown(c.fit) + "': 'crop', 'pad' or 'stretch'");
    } else if (arg == "--grid") {
      const std::string v = value();
      const auto parts = split(v, 'x');
      long long rows = 0, cols = 0;
      if (parts.size() != 2 || !to_integer(parts[0], rows) || !to_integer(parts[1], cols))
        usage_error("--grid '" + shown(v) + "' is not ROWSxCOLS (e.g. 24x24)");
      if (rows < 1 || cols < 1 || rows > max_index || cols > max_index)
        usage_error("--grid " + shown(v) + " is out of range (1.." + std::to_string(max_index) + " each way)");
      c.grid_rows = rows;
      c.grid_cols = cols;
    } else if (arg == "--cell") {
      c.cell = parse_integer(arg, value(), 1, 256);
    } else if (arg == "--preset") {
      c.preset = value();
    } else if (arg == "--max-bytes") {
      c.limits.max_bytes = parse_amount(arg, value());
    } else if (arg == "--max-batch") {
      c.max_batch = static_cast<long long>(std::min<std::uint64_t>(parse_amount(arg, value()), max_index));
    } else if (arg == "--max-pixels") {
      c.max_pixels = parse_amount(arg, value());
    } else {
      usage_error("unknown option '" + shown(arg) + "' (see --help)");
    }
  }
  if (c.input.empty()) usage_error("no input file (see --help)");
  if (!c.image.empty() && c.png.empty()) usage_error("--image needs --png OUT.png");
#if !FREEPRUNER_TOOL_HAVE_STB
  if (!c.png.empty()) usage_error("--png: this freepruner was built without image support (stb; Debian: libstb-dev)");
#endif
  return c;
}

// ---------------------------------------------------------------------------
// --preset: a model's options and patch grid from <freepruner/extras/presets.hpp>,
// under the flags given on the command line.

std::string without_prefix(std::string text) {
  const std::string prefix = "freepruner: ";
  if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
  return text;
}

// A message from freepruner::select in the words of the command line: the
// flag the user types for each option it names.
std::string in_flags(std::string text) {
  static const char* const names[][2] = {{"options.prefix_tokens", "--prefix"},
                                         {"options.suffix_tokens", "--suffix"},
                                         {"options.pivots_per_layer", "--pivots-per-layer"},
                                         {"options.fence_factor", "--fence"},
                                         {"options.complementary_from", "--from"},
                                         {"options.complementary_layer", "--complementary-layer"},
                                         {"options.pivot_layers", "--pivot-layers"}};
  for (const auto& n : names)
    for (std::size_t at = text.find(n[0]); at != std::string::npos; at = text.find(n[0], at))
      text.replace(at, std::strlen(n[0]), n[1]);
  return text;
}

void apply_preset(command& c) {
  if (c.preset.empty()) return;
  freepruner::preset p;
  try {
    p = freepruner::presets::by_name(c.preset);
  } catch (const freepruner::error& e) {
    usage_error("--preset: " + shown(without_prefix(e.what())));
  }
  freepruner::options o = p.select_options;
  for (const auto& flag : c.given) {
    if (flag == "--prefix") o.prefix_tokens = c.options.prefix_tokens;
    else if (flag == "--suffix") o.suffix_tokens = c.options.suffix_tokens;
    else if (flag == "--pivots-per-layer") o.pivots_per_layer = c.options.pivots_per_layer;
    else if (flag == "--fence") o.fence_factor = c.options.fence_factor;
    else if (flag == "--from") o.complementary_from = c.options.complementary_from;
  }
  c.options = o;
  if (c.grid_rows == 0) {
    const auto g = p.layout();
    c.grid_rows = g.rows;
    c.grid_cols = g.cols;
    c.grid_from = "--preset " + p.name + "'s grid " + std::to_string(g.rows) + "x" + std::to_string(g.cols);
  }
  c.model = std::move(p);
}

// ---------------------------------------------------------------------------
// The maps

struct input {
  npy::dtype type = npy::dtype::float32;
  bool batched = false;
  index_t batch = 1, layers = 0, heads = 0, tokens = 0;
  std::vector<const unsigned char*> blocks;  // [item * layers + layer]: that layer's [H][N][N]
  std::vector<npy::array> arrays;             // own the bytes
  std::string form;                           // "[B,L,H,N,N] .npy", for --verbose
};

void check_extents(const std::string& what, const std::vector<std::int64_t>& shape) {
  for (std::int64_t e : shape)
    if (e == 0) data_error(what + ": shape " + npy::shape_text(shape) + " has an empty axis");
  const std::size_t r = shape.size();
  if (shape[r - 1] != shape[r - 2])
    data_error(what + ": shape " + npy::shape_text(shape) + ": the maps are not square (" + std::to_string(shape[r - 2]) +
               " queries, " + std::to_string(shape[r - 1]) + " keys)");
}

void check_batch(const std::string& what, index_t batch, long long max_batch) {
  if (batch > max_batch)
    data_error(what + ": a batch of " + std::to_string(batch) + " items, over the limit of " + std::to_string(max_batch) +
               " (--max-batch)");
}

input from_npy(npy::array a, const std::string& path, long long max_batch) {
  input in;
  const auto& s = a.shape;
  if (s.size() < 2 || s.size() > 5)
    data_error(path + ": shape " + npy::shape_text(s) + " has " + std::to_string(s.size()) +
               " axes; the maps need [L,H,N,N], [L,N,N], [N,N] or a batch [B,L,H,N,N]");
  check_extents(path, s);
  const std::size_t r = s.size();
  in.tokens = s[r - 1];
  in.heads = r >= 4 ? s[r - 3] : 1;
  in.layers = r == 2 ? 1 : r == 3 ? s[0] : s[r - 4];
  in.batched = r == 5;
  in.batch = in.batched ? s[0] : 1;
  check_batch(path, in.batch, max_batch);
  in.form = r == 5 ? "[B,L,H,N,N]" : r == 4 ? "[L,H,N,N]" : r == 3 ? "[L,N,N]" : "[N,N]";
  in.type = a.type;
  const std::size_t block = static_cast<std::size_t>(in.heads * in.tokens * in.tokens) * npy::item_size(a.type);
  for (index_t k = 0; k < in.batch * in.layers; ++k) in.blocks.push_back(a.data + static_cast<std::size_t>(k) * block);
  in.arrays.push_back(std::move(a));
  return in;
}

input from_npz(std::vector<npy::array> arrays, const std::string& path, long long max_batch) {
  input in;
  const npy::array& first = arrays.front();
  const auto& s = first.shape;
  const std::string what = path + ": '" + first.name + "'";
  if (s.size() < 2 || s.size() > 4)
    data_error(what + " has shape " + npy::shape_text(s) + "; each layer needs [H,N,N], [N,N] or a batch [B,H,N,N]");
  check_extents(what, s);
  for (const auto& a : arrays) {
    if (a.shape != s)
      data_error(path + ": '" + a.name + "' has shape " + npy::shape_text(a.shape) + ", '" + first.name + "' has " +
                 npy::shape_text(s) + " (every layer needs the same)");
    if (a.type != first.type)
      data_error(path + ": '" + a.name + "' is " + npy::dtype_name(a.type) + ", '" + first.name + "' is " +
                 npy::dtype_name(first.type) + " (every layer needs the same)");
  }
  const std::size_t r = s.size();
  in.tokens = s[r - 1];
  in.heads = r >= 3 ? s[r - 3] : 1;
  in.layers = static_cast<index_t>(arrays.size());
  in.batched = r == 4;
  in.batch = in.batched ? s[0] : 1;
  check_batch(path, in.batch, max_batch);
  in.form = r == 4 ? "layers of [B,H,N,N]" : r == 3 ? "layers of [H,N,N]" : "layers of [N,N]";
  in.type = first.type;
  const std::size_t block = static_cast<std::size_t>(in.heads * in.tokens * in.tokens) * npy::item_size(first.type);
  for (index_t b = 0; b < in.batch; ++b)
    for (const auto& a : arrays) in.blocks.push_back(a.data + static_cast<std::size_t>(b) * block);
  in.arrays = std::move(arrays);
  return in;
}

input load_input(const command& c) {
  const std::string name = shown(c.input);
  npy::source f(c.input, name);
  // The contents say which format it is: a zip archive starts with "PK".
  unsigned char head[2] = {0, 0};
  f.read(0, static_cast<std::size_t>(std::min<std::uint64_t>(f.size(), 2)), head, name);
  if (head[0] == 'P' && head[1] == 'K') return from_npz(npy::load_npz(f, c.limits), name, c.max_batch);
  const std::string ext = c.input.size() >= 4 ? c.input.substr(c.input.size() - 4) : std::string();
  if (ext == ".npz" || ext == ".NPZ")
    data_error(name + ": not a zip archive (a .npz is one; this file does not start with \"PK\")");
  return from_npy(npy::load_npy(f, c.limits), name, c.max_batch);
}

// --layers: comma-separated Python indices and slices (a:b), resolved
// against the file's layer count.
std::vector<index_t> resolve_layers(const std::string& spec, index_t layers) {
  std::vector<index_t> out;
  if (spec.empty()) {
    for (index_t l = 0; l < layers; ++l) out.push_back(l);
    return out;
  }
  const auto index = [&](const std::string& item, bool bound) -> index_t {
    const long long v = parse_integer("--layers", item, -max_index, max_index);
    const index_t l = v < 0 ? layers + v : v;
    if (bound) return std::clamp<index_t>(l, 0, layers);  // slices clip, as in Python
    if (l < 0 || l >= layers)
      data_error("--layers " + item + " is outside the file's " + std::to_string(layers) + " layers (0.." +
                 std::to_string(layers - 1) + ", or -" + std::to_string(layers) + "..-1)");
    return l;
  };
  for (const auto& item : split(spec, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string::npos) {
      out.push_back(index(item, false));
      continue;
    }
    const std::string a = item.substr(0, colon), b = item.substr(colon + 1);
    const index_t from = a.empty() ? 0 : index(a, true), to = b.empty() ? layers : index(b, true);
    if (from >= to) data_error("--layers " + item + " selects no layer of the file's " + std::to_string(layers));
    for (index_t l = from; l < to; ++l) out.push_back(l);
  }
  for (std::size_t k = 0; k < out.size(); ++k)
    for (std::size_t j = 0; j < k; ++j)
      if (out[j] == out[k]) data_error("--layers " + spec + " uses layer " + std::to_string(out[k]) + " twice");
  return out;
}

// --pivot-layers and --complementary-layer index the used layers, Python-style.
index_t resolve_used_layer(const char* flag, long long v, index_t used) {
  const long long l = v < 0 ? used + v : v;
  if (l < 0 || l >= used)
    data_error(std::string(flag) + " " + std::to_string(v) + " is outside the " + std::to_string(used) +
               " used layers (0.." + std::to_string(used - 1) + ", or -" + std::to_string(used) + "..-1)");
  return static_cast<index_t>(l);
}

// ---------------------------------------------------------------------------
// Selection and output

template <class T>
std::vector<freepruner::selection> select_all(const input& in, const std::vector<index_t>& used, const command& c) {
  std::vector<freepruner::selection> out(static_cast<std::size_t>(in.batch));
  for (index_t b = 0; b < in.batch; ++b) {
    layer_maps<T> maps;
    maps.heads = in.heads;
    maps.tokens = in.tokens;
    for (index_t l : used)
      maps.layers.push_back(reinterpret_cast<const T*>(in.blocks[static_cast<std::size_t>(b * in.layers + l)]));
    freepruner::status s;
    if (c.model && c.model->spatial_merge > 1) {  // select on the merged tokens the LLM sees
      std::vector<double> merged;
      try {
        s = freepruner::try_select(c.model->merge_maps(maps, merged), c.budget, c.options, out[static_cast<std::size_t>(b)]);
      } catch (const freepruner::error& e) {
        s = freepruner::status(e.code(), e.what());
      }
    } else
      s = freepruner::try_select(maps, c.budget, c.options, out[static_cast<std::size_t>(b)]);
    if (!s) {
      const std::string text = in_flags(without_prefix(s.message()));
      data_error(in.batched ? "batch item " + std::to_string(b) + ": " + text : text);
    }
  }
  return out;
}

std::string join(const std::vector<token_t>& v, const char* sep) {
  std::string s;
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (k) s += sep;
    s += std::to_string(v[k]);
  }
  return s;
}

std::string json_of(const freepruner::selection& s, index_t tokens, index_t candidates) {
  return "{\"tokens\":" + std::to_string(tokens) + ",\"candidates\":" + std::to_string(candidates) + ",\"kept\":[" +
         join(s.indices, ",") + "],\"pivotal\":[" + join(s.pivotal, ",") + "],\"complementary\":[" +
         join(s.complementary, ",") + "]}";
}

std::string budget_text(const freepruner::budget& b) {
  switch (b.mode()) {
    case freepruner::budget::kind::count: return "count " + std::to_string(b.count_value());
    case freepruner::budget::kind::ratio: {
      char buf[40];
      std::snprintf(buf, sizeof buf, "ratio %g", b.ratio_value());
      return buf;
    }
    case freepruner::budget::kind::adaptive: break;
  }
  return "adaptive";
}

// The patch grid: --grid, or the square root of the candidates.
bool grid_of(const command& c, index_t candidates, long long& rows, long long& cols, std::string& why) {
  if (c.grid_rows > 0) {
    if (c.grid_rows * c.grid_cols != candidates) {
      why = (c.grid_from == "--grid" ? "--grid " + std::to_string(c.grid_rows) + "x" + std::to_string(c.grid_cols) : c.grid_from) + " has " +
            std::to_string(c.grid_rows * c.grid_cols) + " patches, the maps have " + std::to_string(candidates) +
            " candidates";
      return false;
    }
    rows = c.grid_rows;
    cols = c.grid_cols;
    return true;
  }
  auto side = static_cast<long long>(std::llround(std::sqrt(static_cast<double>(candidates))));
  while (side * side > candidates) --side;
  while ((side + 1) * (side + 1) <= candidates) ++side;
  if (side * side != candidates) {
    why = std::to_string(candidates) + " candidates are not a square grid; give --grid RxC" +
          (c.options.prefix_tokens == 0 && c.options.suffix_tokens == 0 ? " (or --prefix 1 / --suffix 1 for a CLS token)"
                                                                         : "");
    return false;
  }
  rows = cols = side;
  return true;
}

/// Output files, each written under a temporary name in its folder and
/// renamed into place by commit() once every output is complete: a failure
/// leaves none of them behind. A target that is not a regular file (a
/// device, a FIFO) is written in place. Every write and close is checked.
class outputs {
 public:
  outputs() = default;
  outputs(const outputs&) = delete;
  outputs& operator=(const outputs&) = delete;
  ~outputs() {
    for (const auto& f : pending_)
      if (!f.temp.empty()) ::unlink(f.temp.c_str());
  }

  void write(const std::string& target, const std::string& bytes) {
    const std::string name = shown(target);
    const auto fail = [&name](int err) { data_error(name + ": cannot write: " + std::strerror(err)); };
    struct stat st {};
    int fd = -1;
    if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      if (S_ISDIR(st.st_mode)) fail(EISDIR);
      fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail(errno);
    } else {
      std::string temp = target + ".XXXXXX";
      fd = ::mkstemp(&temp[0]);
      if (fd < 0) fail(errno);
      pending_.push_back({target, temp});
      const mode_t mask = ::umask(0);  // mkstemp's 0600: the mode a new file would have
      ::umask(mask);
      if (::fchmod(fd, 0666 & ~mask) != 0) {
        const int err = errno;
        ::close(fd);
        fail(err);
      }
    }
    for (std::size_t at = 0; at < bytes.size();) {
      const ssize_t n = ::write(fd, bytes.data() + at, bytes.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::close(fd);
        fail(err);
      }
      at += static_cast<std::size_t>(n);
    }
    if (::close(fd) != 0) fail(errno);
  }

  /// Renames every file into place.
  void commit() {
    for (std::size_t k = 0; k < pending_.size(); ++k)
      if (std::rename(pending_[k].temp.c_str(), pending_[k].target.c_str()) != 0)
        data_error(shown(pending_[k].target) + ": cannot write: " + std::strerror(errno));
      else
        pending_[k].temp.clear();
    pending_.clear();
  }

 private:
  struct file {
    std::string target, temp;
  };
  std::vector<file> pending_;
};

char patch_mark(const freepruner::selection& s, token_t t) {
  if (std::binary_search(s.pivotal.begin(), s.pivotal.end(), t)) return '#';
  if (std::binary_search(s.complementary.begin(), s.complementary.end(), t)) return '+';
  return '.';
}

#if FREEPRUNER_TOOL_HAVE_STB
std::string png_name(const std::string& png, bool batched, index_t item) {
  if (!batched) return png;
  const std::size_t slash = png.find_last_of('/'), dot = png.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  const std::string stem = has_ext ? png.substr(0, dot) : png, ext = has_ext ? png.substr(dot) : std::string(".png");
  return stem + "_" + std::to_string(item) + ext;
}

// Draws every item's picture into `files`; returns a line per file.
std::string draw(const command& c, const input& in, const std::vector<freepruner::selection>& kept, long long rows,
                 long long cols, outputs& files) {
  namespace pic = picture;
  for (std::size_t b = 0; b < kept.size(); ++b) {  // before any work: the command line is wrong
    const std::string name = png_name(c.png, in.batched, static_cast<index_t>(b));
    for (const std::string* other : {&c.input, &c.image}) {
      std::error_code ec;
      if (!other->empty() && std::filesystem::equivalent(name, *other, ec))
        usage_error("--png " + shown(name) + " is the " + (other == &c.input ? "input file" : "--image picture") +
                    "; give another name");
    }
  }
  std::optional<pic::image> photo;
  if (!c.image.empty()) {
    stage = "reading " + shown(c.image);
    try {
      photo = pic::load(c.image, shown(c.image), c.max_pixels);
    } catch (const npy::error& e) {
      data_error(e.what());
    } catch (const pic::error& e) {
      data_error(e.what());
    }
  }
  if (rows > pic::max_side || cols > pic::max_side)
    data_error("the " + std::to_string(rows) + "x" + std::to_string(cols) + " grid is too large to draw");
  const int r = static_cast<int>(rows), q = static_cast<int>(cols);
  int cell = 0;
  try {
    cell = pic::choose_cell(static_cast<int>(c.cell), r, q, photo ? &*photo : nullptr);
  } catch (const std::runtime_error& e) {  // --cell too large for this grid: it does not fit the file
    data_error(e.what());
  }
  const pic::fit how = c.fit == "pad" ? pic::fit::pad : c.fit == "stretch" ? pic::fit::stretch : pic::fit::crop;
  const index_t first = c.options.prefix_tokens;
  std::string written;
  for (std::size_t b = 0; b < kept.size(); ++b) {
    std::vector<pic::patch> states(static_cast<std::size_t>(rows * cols));
    for (std::size_t k = 0; k < states.size(); ++k) {
      const char m = patch_mark(kept[b], static_cast<token_t>(first + static_cast<index_t>(k)));
      states[k] = m == '#' ? pic::patch::pivotal : m == '+' ? pic::patch::complementary : pic::patch::dropped;
    }
    const std::string name = png_name(c.png, in.batched, static_cast<index_t>(b));
    stage = "drawing " + shown(name);
    std::string png;
    try {
      png = pic::encode_png(pic::render(states, r, q, cell, photo ? &*photo : nullptr, how));
    } catch (const std::runtime_error& e) {
      data_error(shown(name) + ": " + e.what());
    }
    files.write(name, png);
    written += "wrote " + shown(name) + " (" + std::to_string(q * cell) + "x" + std::to_string(r * cell) + " px)\n";
  }
  return written;
}
#endif

int run(int argc, char** argv) {
  command c = parse_command(argc, argv);
  apply_preset(c);
  input in;
  stage = "reading " + shown(c.input);
  try {
    in = load_input(c);
  } catch (const npy::error& e) {
    data_error(e.what());
  }
  index_t tokens = in.tokens;  // of the maps select reads
  if (c.model) {
    const freepruner::preset& p = *c.model;
    if (in.tokens != p.tokens)
      data_error("--preset " + p.name + " is for maps of " + std::to_string(p.tokens) + " tokens; " + shown(c.input) + " has " +
                 std::to_string(in.tokens));
    const auto captured = static_cast<index_t>(p.capture_layers.size());
    if (c.layers.empty() && in.layers != captured) {
      std::string list;
      for (index_t l : p.capture_layers) {
        if (!list.empty()) list += ',';
        list += std::to_string(l);
      }
      if (in.layers != p.encoder_layers)
        data_error("--preset " + p.name + " reads encoder layers " + list + ": the file needs those " +
                   std::to_string(captured) + " layers or all " + std::to_string(p.encoder_layers) + ", it has " +
                   std::to_string(in.layers) + " (or give --layers)");
      c.layers = list;  // a dump of every layer: the preset's
    }
    tokens = p.select_tokens();
  }
  const std::vector<index_t> used = resolve_layers(c.layers, in.layers);
  const auto count = static_cast<index_t>(used.size());
  if (c.complementary_layer) c.options.complementary_layer = resolve_used_layer("--complementary-layer", *c.complementary_layer, count);
  if (c.pivot_layers) {
    c.options.pivot_layers.clear();
    for (long long v : *c.pivot_layers) c.options.pivot_layers.push_back(resolve_used_layer("--pivot-layers", v, count));
  }

  stage = "selecting the tokens of " + shown(c.input);
  std::vector<freepruner::selection> kept;
  switch (in.type) {
    case npy::dtype::float16: kept = select_all<Eigen::half>(in, used, c); break;
    case npy::dtype::float32: kept = select_all<float>(in, used, c); break;
    case npy::dtype::float64: kept = select_all<double>(in, used, c); break;
  }
  // select succeeded, so the candidates are these.
  const index_t candidates = tokens - c.options.prefix_tokens - c.options.suffix_tokens;
  long long rows = 0, cols = 0;
  std::string no_grid;
  const bool have_grid = grid_of(c, candidates, rows, cols, no_grid);
  if (!c.png.empty() && !have_grid) data_error(no_grid);
  if (c.grid_rows > 0 && !have_grid) data_error(no_grid);

  // The pictures first, under temporary names: one that cannot be written
  // leaves no output at all.
  std::string written;
  outputs files;
#if FREEPRUNER_TOOL_HAVE_STB
  if (!c.png.empty()) written = draw(c, in, kept, rows, cols, files);
#endif
  stage = "writing the output";
  std::string out;
  if (c.json) {
    if (in.batched) out += "[";
    for (std::size_t b = 0; b < kept.size(); ++b) {
      if (b) out += ",";
      out += json_of(kept[b], tokens, candidates);
    }
    if (in.batched) out += "]";
    out += "\n";
  } else if (!c.verbose) {
    for (const auto& s : kept) out += join(s.indices, " ") + "\n";
  } else {
    out += shown(c.input) + ": " + std::to_string(in.layers) + " layers x " + std::to_string(in.heads) + " heads x " +
           std::to_string(in.tokens) + " tokens (" + in.form + ", " + npy::dtype_name(in.type) + ")";
    if (in.batched) out += ", batch of " + std::to_string(in.batch);
    if (c.model) {
      out += "\npreset " + c.model->name;
      if (c.model->spatial_merge > 1)
        out += ": " + std::to_string(c.model->spatial_merge) + "x" + std::to_string(c.model->spatial_merge) +
               " patches merged, " + std::to_string(tokens) + " tokens";
    }
    out += "\nused layers:";
    for (index_t l : used) out += " " + std::to_string(l);
    out += "; candidates " + std::to_string(c.options.prefix_tokens) + ".." +
           std::to_string(tokens - c.options.suffix_tokens - 1) + " (" + std::to_string(candidates) + "); budget " +
           budget_text(c.budget) + "\n";
    for (std::size_t b = 0; b < kept.size(); ++b) {
      const auto& s = kept[b];
      if (in.batched) out += "item " + std::to_string(b) + ":\n";
      out += "kept " + std::to_string(s.indices.size()) + ": " + join(s.indices, " ") + "\n";
      out += "pivotal " + std::to_string(s.pivotal.size()) + ": " + join(s.pivotal, " ") + "\n";
      out += "complementary " + std::to_string(s.complementary.size()) + ": " + join(s.complementary, " ") + "\n";
      if (have_grid && rows * cols <= 128 * 128) {
        out += "grid " + std::to_string(rows) + "x" + std::to_string(cols) +
               " (# pivotal, + complementary, . dropped):\n";
        for (long long y = 0; y < rows; ++y) {
          out += " ";
          for (long long x = 0; x < cols; ++x) {
            out += ' ';
            out += patch_mark(s, static_cast<token_t>(c.options.prefix_tokens + y * cols + x));
          }
          out += "\n";
        }
      }
    }
  }
  if (c.verbose && !c.json) out += written;
  files.commit();
  write_stdout(out);
  return 0;
}

}  // namespace
}  // namespace freepruner_tool

namespace freepruner_tool {
namespace {

// The one error line: any byte that could still split it or reach the
// terminal as a command is escaped, and the line is cut at 1000 bytes.
void report(const std::string& message) {
  std::string line;
  for (std::size_t k = 0; k < message.size() && k < 1000; ++k) {
    const auto c = static_cast<unsigned char>(message[k]);
    if (c >= 0x20 && c < 0x7F) {
      line += static_cast<char>(c);  // a backslash stays: it begins the escapes already made
    } else {
      static const char hex[] = "0123456789abcdef";
      line += "\\x";
      line += hex[c >> 4];
      line += hex[c & 15];
    }
  }
  if (message.size() > 1000) line += "...";
  std::fprintf(stderr, "freepruner: %s\n", line.c_str());
}

}  // namespace
}  // namespace freepruner_tool

int main(int argc, char** argv) {
  using freepruner_tool::report;
  try {
    return freepruner_tool::run(argc, argv);
  } catch (const freepruner_tool::failure& e) {
    report(e.what());
    return e.code;
  } catch (const freepruner::error& e) {  // select's own checks, should one throw
    report(freepruner_tool::without_prefix(e.what()));
    return 1;
  } catch (const std::bad_alloc&) {
    report("out of memory while " + freepruner_tool::stage);
    return 1;
  } catch (const std::exception& e) {
    report(e.what());
    return 1;
  }
}
