#pragma once
// The SPEC conformance vectors (cases.txt and raw float32 maps, see
// tests/data/conformance/README.md), read without a test framework:
// tests/conformance.cpp and the CUDA tests run them.

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <freepruner/options.hpp>

namespace fptest {

struct conformance_case {
  std::string name, file, kind, dir;
  freepruner::index_t L = 0, H = 0, N = 0, prefix = 0, suffix = 0, pivots = 0, comp = 0;
  double value = 0;
  std::vector<freepruner::token_t> indices, pivotal, complementary;

  freepruner::options options() const {
    freepruner::options o;
    o.prefix_tokens = prefix;
    o.suffix_tokens = suffix;
    o.pivots_per_layer = pivots;
    o.complementary_layer = comp;
    o.complementary_from = dir == "column" ? freepruner::direction::column : freepruner::direction::row;
    return o;
  }
  freepruner::budget budget() const {
    return kind == "adaptive" ? freepruner::budget::adaptive()
           : kind == "count"  ? freepruner::budget::count(static_cast<freepruner::index_t>(value))
                              : freepruner::budget::ratio(value);
  }
  freepruner::selection expected() const {
    freepruner::selection s;
    s.indices = indices;
    s.pivotal = pivotal;
    s.complementary = complementary;
    return s;
  }
};

inline std::vector<freepruner::token_t> read_token_list(std::istringstream& in) {
  std::vector<freepruner::token_t> out;
  std::string word;
  while (in >> word && word != "|") out.push_back(static_cast<freepruner::token_t>(std::stol(word)));
  return out;
}

/// One line of cases.txt; false for blank and comment lines.
inline bool parse_case(const std::string& line, conformance_case& c) {
  if (line.empty() || line[0] == '#') return false;
  std::istringstream in(line);
  std::string bar;
  in >> c.name >> c.file >> c.L >> c.H >> c.N >> c.prefix >> c.suffix >> c.kind >> c.value >> c.pivots >> c.dir >> c.comp >> bar;
  c.indices = read_token_list(in);
  c.pivotal = read_token_list(in);
  c.complementary = read_token_list(in);
  return true;
}

/// The case's maps [L][H][N][N] from `dir`; false unless the file holds exactly that many float32 values.
inline bool read_case_maps(const std::string& dir, const conformance_case& c, std::vector<float>& maps) {
  maps.assign(static_cast<std::size_t>(c.L * c.H * c.N * c.N), 0.0f);
  std::ifstream f(dir + "/" + c.file, std::ios::binary);
  f.read(reinterpret_cast<char*>(maps.data()), static_cast<std::streamsize>(maps.size() * sizeof(float)));
  return f && f.peek() == EOF;
}

}  // namespace fptest
