// Runs the tool on maps written here and compares its --json answer with
// freepruner::select on the same maps: first the SPEC conformance vectors
// (written as .npy and as .npz), then random maps in every form, element
// type and option, --layers included.
//
//   freepruner_tool_cli_check TOOL CONFORMANCE_DIR SCRATCH_DIR [SEED]
//
// Prints "N passed, N failed"; exit 0 when nothing failed.

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <freepruner/freepruner.hpp>

#include "maps.hpp"
#include "npy_writer.hpp"

namespace {

using freepruner::index_t;
using freepruner::token_t;
using shape_t = std::vector<std::int64_t>;

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The tool's stdout and exit code (stderr goes to the terminal, for the log).
int run(const std::string& tool, const std::vector<std::string>& args, std::string& out) {
  std::string cmd = quote(tool);
  for (const auto& a : args) {
    cmd += ' ';
    cmd += quote(a);
  }
  out.clear();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<token_t> list_after(const std::string& json, const std::string& key, std::size_t& at) {
  std::vector<token_t> out;
  at = json.find("\"" + key + "\":[", at);
  if (at == std::string::npos) return out;
  at += key.size() + 4;
  const std::size_t end = json.find(']', at);
  std::string body = json.substr(at, end - at);
  std::replace(body.begin(), body.end(), ',', ' ');
  std::istringstream in(body);
  long long v = 0;
  while (in >> v) out.push_back(static_cast<token_t>(v));
  at = end;
  return out;
}

// The selections of a --json answer, in order.
std::vector<freepruner::selection> parse_json(const std::string& json) {
  std::vector<freepruner::selection> out;
  std::size_t at = 0;
  while (json.find("\"kept\":[", at) != std::string::npos) {
    freepruner::selection s;
    s.indices = list_after(json, "kept", at);
    s.pivotal = list_after(json, "pivotal", at);
    s.complementary = list_after(json, "complementary", at);
    out.push_back(s);
  }
  return out;
}

std::string show(const std::vector<freepruner::selection>& v) {
  std::string s;
  for (const auto& x : v) {
    s += "[";
    for (token_t t : x.indices) {
      s += ' ';
      s += std::to_string(t);
    }
    s += " | ";
    for (token_t t : x.pivotal) {
      s += ' ';
      s += std::to_string(t);
    }
    s += " ]";
  }
  return s;
}

struct tally {
  int passed = 0, failed = 0;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAILED: %s\n", what.c_str());
    }
  }
};

std::vector<float> slice(const std::vector<float>& v, std::size_t from, std::size_t count) {
  return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(from + count));
}

template <class E>
std::vector<E> cast(const std::vector<float>& v) {
  std::vector<E> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = static_cast<E>(v[k]);
  return out;
}

template <class E>
const char* descr();
template <>
const char* descr<float>() {
  return "<f4";
}
template <>
const char* descr<double>() {
  return "<f8";
}
template <>
const char* descr<Eigen::half>() {
  return "<f2";
}

// ---------------------------------------------------------------------------
// The conformance vectors: cases.txt + raw float32 maps [L][H][N][N].

void conformance(const std::string& tool, const std::string& dir, const std::string& scratch, tally& t) {
  std::ifstream cases(dir + "/cases.txt");
  if (!cases) {
    std::printf("conformance vectors not found at %s/cases.txt: that part is skipped\n", dir.c_str());
    return;
  }
  std::string line;
  while (std::getline(cases, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string name, file, kind, direction, bar;
    long long L = 0, H = 0, N = 0, prefix = 0, suffix = 0, pivots = 0, comp = 0;
    double value = 0;
    in >> name >> file >> L >> H >> N >> prefix >> suffix >> kind >> value >> pivots >> direction >> comp >> bar;
    const auto read_list = [&in] {
      std::vector<token_t> v;
      std::string w;
      while (in >> w && w != "|") v.push_back(static_cast<token_t>(std::stol(w)));
      return v;
    };
    freepruner::selection want;
    want.indices = read_list();
    want.pivotal = read_list();
    want.complementary = read_list();

    const auto count = static_cast<std::size_t>(L * H * N * N);
    std::vector<float> maps(count);
    std::ifstream f(dir + "/" + file, std::ios::binary);
    f.read(reinterpret_cast<char*>(maps.data()), static_cast<std::streamsize>(count * sizeof(float)));
    if (!f) {
      t.check(false, name + ": cannot read " + file);
      continue;
    }
    const std::string npy_path = scratch + "/" + name + ".npy", npz_path = scratch + "/" + name + ".npz";
    npy_writer::write(npy_path, npy_writer::npy_of(maps, "<f4", {L, H, N, N}));
    std::vector<npy_writer::entry> layers;
    const auto layer = static_cast<std::size_t>(H * N * N);
    for (long long l = 0; l < L; ++l)
      layers.push_back({"arr_" + std::to_string(l) + ".npy",
                        npy_writer::npy_of(slice(maps, static_cast<std::size_t>(l) * layer, layer), "<f4", {H, N, N})});
    npy_writer::write(npz_path, npy_writer::zip(layers));

    std::vector<std::string> args = {"--json", "--prefix", std::to_string(prefix), "--suffix", std::to_string(suffix),
                                     "--pivots-per-layer", std::to_string(pivots), "--from", direction,
                                     "--complementary-layer", std::to_string(comp)};
    if (kind == "count") args.insert(args.end(), {"--count", std::to_string(static_cast<long long>(value))});
    else if (kind == "ratio") args.insert(args.end(), {"--ratio", std::to_string(value)});
    for (const std::string& path : {npy_path, npz_path}) {
      auto a = args;
      a.insert(a.begin(), path);
      std::string out;
      const int rc = run(tool, a, out);
      const auto got = parse_json(out);
      const bool ok = rc == 0 && got.size() == 1 && got[0] == want;
      t.check(ok, "conformance " + name + " (" + path + "): exit " + std::to_string(rc) + ", got " + show(got) +
                      ", want " + show({want}));
    }
  }
}

// ---------------------------------------------------------------------------
// Random maps in every form.

template <class E>
void random_case(const std::string& tool, const std::string& scratch, std::mt19937_64& rng, int id, tally& t) {
  const auto pick = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // 0 [L,H,N,N]  1 [L,N,N]  2 [B,L,H,N,N]  3 [N,N]  4 npz [H,N,N]  5 npz [B,H,N,N]  6 npz [N,N]
  const int form = pick(0, 6);
  const bool npz = form >= 4, batched = form == 2 || form == 5;
  const int L = form == 3 ? 1 : pick(1, 4), H = form == 1 || form == 3 || form == 6 ? 1 : pick(1, 3);
  const int N = pick(2, 40), B = batched ? pick(1, 3) : 1;
  const auto maps = tool_test::random_maps(rng, B * L, H, N);  // [B][L][H][N][N]
  const auto values = cast<E>(maps);
  const std::size_t layer = static_cast<std::size_t>(H * N * N);

  std::string path = scratch + "/random_" + std::to_string(id) + (npz ? ".npz" : ".npy");
  if (!npz) {
    const shape_t shape = form == 0 ? shape_t{L, H, N, N} : form == 1 ? shape_t{L, N, N} : form == 2 ? shape_t{B, L, H, N, N} : shape_t{N, N};
    npy_writer::write(path, npy_writer::npy_of(values, descr<E>(), shape, pick(1, 3)));
  } else {
    std::vector<npy_writer::entry> entries;
    for (int l = 0; l < L; ++l) {
      std::vector<E> items;
      for (int b = 0; b < B; ++b) {
        const auto from = values.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(b * L + l) * layer);
        items.insert(items.end(), from, from + static_cast<std::ptrdiff_t>(layer));
      }
      const shape_t shape = form == 4 ? shape_t{H, N, N} : form == 5 ? shape_t{B, H, N, N} : shape_t{N, N};
      entries.push_back({"arr_" + std::to_string(l) + ".npy", npy_writer::npy_of(items, descr<E>(), shape)});
    }
    npy_writer::zip_options o;
#if FREEPRUNER_TOOL_HAVE_ZLIB
    o.deflate = pick(0, 1) == 1;
#endif
    o.zip64 = pick(0, 3) == 0;
    npy_writer::write(path, npy_writer::zip(entries, o));
  }

  // Options, and the same on the command line.
  std::vector<std::string> args = {path, "--json"};
  freepruner::options o;
  o.prefix_tokens = pick(0, std::min(2, N - 1));
  o.suffix_tokens = pick(0, std::min(1, N - 1 - static_cast<int>(o.prefix_tokens)));
  args.insert(args.end(), {"--prefix", std::to_string(o.prefix_tokens), "--suffix", std::to_string(o.suffix_tokens)});
  // --layers: a random non-empty list of distinct layers, some written from the end.
  std::vector<int> used(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) used[static_cast<std::size_t>(l)] = l;
  if (pick(0, 2) != 0) {  // otherwise every layer, without the flag
    std::shuffle(used.begin(), used.end(), rng);
    used.resize(static_cast<std::size_t>(pick(1, L)));
    std::string list;
    for (int l : used) {
      if (!list.empty()) list += ',';
      list += std::to_string(pick(0, 1) ? l : l - L);
    }
    args.insert(args.end(), {"--layers", list});
  }
  const int U = static_cast<int>(used.size());
  if (pick(0, 1)) {
    o.pivots_per_layer = pick(1, 3);
    args.insert(args.end(), {"--pivots-per-layer", std::to_string(o.pivots_per_layer)});
  }
  if (pick(0, 2) == 0) {
    o.fence_factor = pick(0, 1) ? 0.5 : 3.0;
    args.insert(args.end(), {"--fence", o.fence_factor == 0.5 ? "0.5" : "3"});
  }
  if (pick(0, 1)) {
    o.complementary_from = freepruner::direction::column;
    args.insert(args.end(), {"--from", "column"});
  }
  if (pick(0, 1)) {
    const int c = pick(-U, U - 1);
    o.complementary_layer = c < 0 ? U + c : c;
    args.insert(args.end(), {"--complementary-layer", std::to_string(c)});
  }
  if (pick(0, 1)) {
    std::string list;
    for (int l = 0; l < U; ++l)
      if (pick(0, 1) || (l == U - 1 && list.empty())) {
        o.pivot_layers.push_back(l);
        if (!list.empty()) list += ',';
        list += std::to_string(pick(0, 1) ? l : l - U);
      }
    args.insert(args.end(), {"--pivot-layers", list});
  }
  freepruner::budget b = freepruner::budget::adaptive();
  switch (pick(0, 3)) {
    case 0: args.insert(args.end(), {"--budget", "adaptive"}); break;
    case 1: {
      const int m = pick(1, N + 2);
      b = freepruner::budget::count(m);
      args.insert(args.end(), {"--count", std::to_string(m)});
      break;
    }
    case 2: {
      const double x = pick(1, 20) / 20.0;
      b = freepruner::budget::ratio(x);
      char text[32];
      std::snprintf(text, sizeof text, "%.17g", x);
      args.insert(args.end(), {"--ratio", text});
      break;
    }
    default: break;
  }

  // The library on each item's used layers, copied contiguous.
  std::vector<freepruner::selection> want;
  for (int item = 0; item < B; ++item) {
    std::vector<E> chosen;
    for (int l : used) {
      const auto from = values.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(item * L + l) * layer);
      chosen.insert(chosen.end(), from, from + static_cast<std::ptrdiff_t>(layer));
    }
    want.push_back(freepruner::select(freepruner::attention_view<const E>(chosen.data(), U, H, N), b, o));
  }
  std::string out;
  const int rc = run(tool, args, out);
  const auto got = parse_json(out);
  const bool shape_ok = batched ? (out.size() > 1 && out[0] == '[') : (out.size() > 1 && out[0] == '{');
  std::string cmd;
  for (const auto& a : args) cmd += " " + a;
  t.check(rc == 0 && shape_ok && got == want,
          "random case" + cmd + ": exit " + std::to_string(rc) + ", got " + show(got) + ", want " + show(want));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: freepruner_tool_cli_check TOOL CONFORMANCE_DIR SCRATCH_DIR [SEED]\n");
    return 2;
  }
  const std::string tool = argv[1], dir = argv[2], scratch = argv[3];
  std::filesystem::create_directories(scratch);
  const unsigned long long seed =
      argc > 4 ? std::stoull(argv[4]) : static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::printf("seed %llu (pass it as the fourth argument to replay)\n", seed);
  std::mt19937_64 rng(seed);
  tally t;
  conformance(tool, dir, scratch, t);
  for (int id = 0; id < 150; ++id) {
    switch (id % 3) {
      case 0: random_case<float>(tool, scratch, rng, id, t); break;
      case 1: random_case<Eigen::half>(tool, scratch, rng, id, t); break;
      default: random_case<double>(tool, scratch, rng, id, t); break;
    }
  }
  std::printf("%d passed, %d failed\n", t.passed, t.failed);
  return t.failed == 0 ? 0 : 1;
}
