// The .npy/.npz readers of the command-line tool: files written here in
// every variant numpy writes are read back bit for bit and give the same
// selection as the maps they were made from; broken files (each error
// class, every truncation, random corruption) give npy::error, never a crash.

#define CATCH_CONFIG_MAIN
#include "../../tests/common.hpp"

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "npy_writer.hpp"

namespace {

namespace fs = std::filesystem;
namespace npy = freepruner_tool::npy;
using freepruner::index_t;

// A folder for this run's files, removed at exit.
struct scratch {
  fs::path dir;
  scratch() {
    dir = fs::temp_directory_path() / ("freepruner_test_npy_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const fs::path& temp_dir() {
  static const scratch s;
  return s.dir;
}

std::string temp_file(const std::string& name, const std::string& bytes) {
  const std::string path = (temp_dir() / name).string();
  npy_writer::write(path, bytes);
  return path;
}

template <class E>
const char* descr(bool big = false);
template <>
const char* descr<float>(bool big) {
  return big ? ">f4" : "<f4";
}
template <>
const char* descr<double>(bool big) {
  return big ? ">f8" : "<f8";
}
template <>
const char* descr<Eigen::half>(bool big) {
  return big ? ">f2" : "<f2";
}

template <class E>
std::string raw_bytes(const std::vector<E>& v, bool big) {
  std::string s(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(E));
  if (big)
    for (std::size_t k = 0; k < v.size(); ++k) std::reverse(s.begin() + static_cast<std::ptrdiff_t>(k * sizeof(E)),
                                                            s.begin() + static_cast<std::ptrdiff_t>((k + 1) * sizeof(E)));
  return s;
}

// The message of the npy::error that loading `path` throws ("" if none).
template <class Load>
std::string error_of(Load load) {
  try {
    load();
  } catch (const npy::error& e) {
    return e.what();
  }
  return "";
}

std::string npy_error(const std::string& bytes) {
  const std::string path = temp_file("bad.npy", bytes);
  return error_of([&] { npy::load_npy(path); });
}
std::string npz_error(const std::string& bytes) {
  const std::string path = temp_file("bad.npz", bytes);
  return error_of([&] { npy::load_npz(path); });
}

const std::vector<float> tiny = {1, 2, 3, 4, 5, 6};
std::string tiny_npy(int version = 1) { return npy_writer::npy_of(tiny, "<f4", {2, 3}, version); }

template <class E>
void check_round_trip(int version, bool big) {
  const int L = fptest::uniform_int(1, 3), H = fptest::uniform_int(1, 4), N = fptest::uniform_int(2, 40);
  const std::vector<E> maps = fptest::convert<E>(fptest::random_maps(L, H, N));
  const std::string path = temp_file("maps.npy", npy_writer::npy(npy_writer::dict(descr<E>(big), false, {L, H, N, N}),
                                                                 raw_bytes(maps, big).data(), maps.size() * sizeof(E),
                                                                 version));
  const npy::array a = npy::load_npy(path);
  CAPTURE(version, big, L, H, N, descr<E>(big));
  REQUIRE(a.shape == std::vector<std::int64_t>{L, H, N, N});
  REQUIRE(a.count == maps.size());
  REQUIRE(npy::item_size(a.type) == sizeof(E));
  REQUIRE(reinterpret_cast<std::uintptr_t>(a.data) % sizeof(E) == 0);
  REQUIRE(std::memcmp(a.data, maps.data(), maps.size() * sizeof(E)) == 0);
  CHECK(a.data == a.owner.get());  // the data alone is held, swapped in place
  freepruner::options o;
  o.prefix_tokens = fptest::uniform_int(0, 1);
  const auto b = freepruner::budget::ratio(0.5);
  CHECK(freepruner::select(freepruner::attention_view<const E>(a.as<E>(), L, H, N), b, o) ==
        freepruner::select(freepruner::attention_view<const E>(maps.data(), L, H, N), b, o));
}

}  // namespace

TEST_CASE("npy: every dtype, format version and byte order reads back bit for bit; select agrees") {
  for (int version = 1; version <= 3; ++version)
    for (bool big : {false, true}) {
      check_round_trip<float>(version, big);
      check_round_trip<double>(version, big);
      check_round_trip<Eigen::half>(version, big);
    }
}

TEST_CASE("npy: shapes of any rank, zero-sized axes, Python 2 long suffixes, the header's spacing") {
  const std::vector<float> one = {7};
  auto a = npy::load_npy(temp_file("s.npy", npy_writer::npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", one.data(), 4)));
  CHECK(a.shape.empty());
  CHECK(a.count == 1);
  a = npy::load_npy(temp_file("s.npy", npy_writer::npy("{'descr':'<f4','fortran_order':False,'shape':(0, 5)}", nullptr, 0)));
  CHECK(a.shape == std::vector<std::int64_t>{0, 5});
  CHECK(a.count == 0);
  a = npy::load_npy(temp_file("s.npy", npy_writer::npy("{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                                       tiny.data(), 24)));
  CHECK(a.shape == std::vector<std::int64_t>{2, 3});
  CHECK(a.as<float>()[5] == 6.0f);
}

TEST_CASE("npz: stored, deflated and zip64 archives; arr_<n> in numeric order, keyword names in archive order") {
  const int L = 12, H = 2, N = 9;
  const auto maps = fptest::convert<float>(fptest::random_maps(L, H, N));
  const auto layer = [&](int l) {
    return std::vector<float>(maps.begin() + l * H * N * N, maps.begin() + (l + 1) * H * N * N);
  };
  std::vector<npy_writer::entry> positional, keyword;
  std::vector<int> order(L);
  for (int l = 0; l < L; ++l) order[static_cast<std::size_t>(l)] = l;
  std::shuffle(order.begin(), order.end(), fptest::rng());
  for (int l : order) positional.push_back({"arr_" + std::to_string(l) + ".npy", npy_writer::npy_of(layer(l), "<f4", {H, N, N})});
  for (int l = 0; l < L; ++l)
    keyword.push_back({"z_layer_" + std::string(1, static_cast<char>('a' + (L - l))) + ".npy", npy_writer::npy_of(layer(l), "<f4", {H, N, N})});

  for (bool deflate : {false, true})
    for (bool zip64 : {false, true}) {
      CAPTURE(deflate, zip64);
      npy_writer::zip_options o;
      o.deflate = deflate;
      o.zip64 = zip64;
      o.comment = zip64 ? "an archive comment" : "";
#if !FREEPRUNER_TOOL_HAVE_ZLIB
      if (deflate) {
        o.deflate = false;
        continue;
      }
#endif
      for (const auto* set : {&positional, &keyword}) {
        const auto arrays = npy::load_npz(temp_file("maps.npz", npy_writer::zip(*set, o)));
        REQUIRE(arrays.size() == static_cast<std::size_t>(L));
        for (int l = 0; l < L; ++l) {
          const auto& a = arrays[static_cast<std::size_t>(l)];
          const std::string& written = (*set)[static_cast<std::size_t>(l)].name;
          CHECK(a.name == (set == &positional ? "arr_" + std::to_string(l) : written.substr(0, written.size() - 4)));
          REQUIRE(a.shape == std::vector<std::int64_t>{H, N, N});
          REQUIRE(std::memcmp(a.data, layer(l).data(), static_cast<std::size_t>(H * N * N) * 4) == 0);
        }
      }
    }
}

TEST_CASE("npz: a stored entry whose data is misaligned in the file is copied, its values intact") {
  const auto maps = fptest::convert<double>(fptest::random_maps(1, 1, 6));
  for (std::string name : {"a.npy", "ab.npy", "abc.npy", "abcd.npy"}) {
    const auto arrays = npy::load_npz(temp_file("m.npz", npy_writer::zip({{name, npy_writer::npy_of(maps, "<f8", {6, 6})}})));
    REQUIRE(arrays.size() == 1);
    CHECK(reinterpret_cast<std::uintptr_t>(arrays[0].data) % 8 == 0);
    CHECK(std::memcmp(arrays[0].data, maps.data(), maps.size() * 8) == 0);
  }
}

#if !FREEPRUNER_TOOL_HAVE_ZLIB
TEST_CASE("npz: without zlib a compressed archive is an error that says so") {
  std::string z = npy_writer::zip({{"arr_0.npy", tiny_npy()}});
  z[z.find("PK\1\2") + 10] = 8;  // method: deflate
  CHECK_THAT(npz_error(z), Catch::Contains("built without zlib"));
}
#endif

TEST_CASE("npy: each bad file is an error naming the file and the problem") {
  using Catch::Contains;
  const std::string d = npy_writer::dict("<f4", false, {2, 3});
  const auto with_dict = [&](const std::string& text) { return npy_writer::npy(text, tiny.data(), 24); };
  CHECK_THAT(error_of([] { npy::load_npy((temp_dir() / "missing.npy").string()); }), Contains("missing.npy: cannot open: No such file or directory"));
  CHECK_THAT(error_of([] { npy::load_npy(temp_dir().string()); }), Contains("is a directory"));
  CHECK_THAT(npy_error(""), Contains("bad.npy: not a .npy file"));
  CHECK_THAT(npy_error("PK\3\4 not numpy at all"), Contains("not a .npy file"));
  CHECK_THAT(npy_error(std::string("\x93NUMPZ\1\0\0\0", 10)), Contains("not a .npy file"));
  std::string v = tiny_npy();
  v[6] = 4;
  CHECK_THAT(npy_error(v), Contains("version 4.0 is not supported"));
  v = tiny_npy();
  v[8] = '\xff';  // header length past the end
  CHECK_THAT(npy_error(v), Contains("truncated: the .npy header needs"));
  CHECK_THAT(npy_error(tiny_npy().substr(0, 11)), Contains("truncated"));
  CHECK_THAT(npy_error(with_dict("[1, 2]")), Contains("not a dictionary"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'shape': (2, 3)}")), Contains("needs the keys"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}")), Contains("unexpected key 'x'"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}")), Contains("given twice"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)")), Contains("expected ',' or '}'"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}")), Contains("bad .npy header"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} extra")), Contains("after the dictionary"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}")), Contains("'fortran_order' is not True or False"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}")), Contains("'shape' is not a tuple"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}")), Contains("non-negative integer"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'a')}")), Contains("non-negative integer"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}")), Contains("too large"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}")),
             Contains("more elements than memory can address"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,)}")),
             Contains("more bytes than memory can address"));
  CHECK_THAT(npy_error(with_dict("{'descr': " + std::string(40, '(') + "}")), Contains("nested too deeply"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3)}")), Contains("dtype '<i4' is not supported"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3)}")), Contains("dtype '<c8' is not supported"));
  CHECK_THAT(npy_error(with_dict("{'descr': '<\xe8\x1b[2J', 'fortran_order': False, 'shape': (2, 3)}")),
             Contains("dtype '<\\xe8\\x1b[2J' is not supported"));
  CHECK_THAT(npy_error(with_dict("{'descr': '" + std::string(100, 'x') + "', 'fortran_order': False, 'shape': (2, 3)}")),
             Contains("dtype '" + std::string(64, 'x') + "...' is not supported"));
  CHECK_THAT(npy_error(with_dict("{'descr': '|f4', 'fortran_order': False, 'shape': (2, 3)}")), Contains("has no byte order"));
  CHECK_THAT(npy_error(with_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3)}")), Contains("structured dtype"));
  CHECK_THAT(npy_error(npy_writer::npy(npy_writer::dict("<f4", true, {2, 3}), tiny.data(), 24)), Contains("Fortran (column-major) order"));
  CHECK_THAT(npy_error(npy_writer::npy(d, tiny.data(), 20)), Contains("truncated: shape (2, 3) of float32 needs 24 bytes of data, 20 are there"));
  CHECK_THAT(npy_error(tiny_npy() + "xyz"), Contains("3 unexpected bytes after the data"));
}

TEST_CASE("npz: each bad archive is an error naming the file and the problem") {
  using Catch::Contains;
  const std::string good = npy_writer::zip({{"arr_0.npy", tiny_npy()}});
  const auto patched = [&](std::size_t at, const std::string& bytes) {
    std::string z = good;
    z.replace(at, bytes.size(), bytes);
    return z;
  };
  const std::size_t local = 0, central = 30 + 9 + tiny_npy().size(), eocd = central + 46 + 9;
  REQUIRE(good.substr(central, 4) == "PK\1\2");
  REQUIRE(good.substr(eocd, 4) == "PK\5\6");
  CHECK_THAT(npz_error("PK"), Contains("bad.npz: not a zip archive"));
  CHECK_THAT(npz_error("PK" + std::string(100, 'x')), Contains("no end-of-central-directory record"));
  CHECK_THAT(npz_error(npy_writer::zip({})), Contains("holds no array"));
  CHECK_THAT(npz_error(patched(eocd + 4, std::string("\1\0", 2))), Contains("multi-part"));
  CHECK_THAT(npz_error(patched(eocd + 16, std::string("\xff\xff\0\0", 4))), Contains("central directory lies outside the file"));
  CHECK_THAT(npz_error(patched(eocd + 10, std::string("\x09\0", 2))), Contains("more entries than the directory holds"));
  CHECK_THAT(npz_error(patched(central, "PK\1\3")), Contains("bad central directory entry 0"));
  CHECK_THAT(npz_error(patched(central + 8, std::string("\1\0", 2))), Contains("is encrypted"));
  // Local and central headers changed alike reach the later checks.
  const auto both = [&](std::size_t local_at, std::size_t central_at, const std::string& bytes) {
    std::string z = good;
    z.replace(local + local_at, bytes.size(), bytes);
    z.replace(central + central_at, bytes.size(), bytes);
    return z;
  };
  CHECK_THAT(npz_error(both(8, 10, std::string("\x0c\0", 2))), Contains("compression method 12 is not supported"));
  CHECK_THAT(npz_error(both(14, 16, "abcd")), Contains("entry 'arr_0.npy' is corrupt (its CRC-32 does not match)"));
  CHECK_THAT(npz_error(both(18, 20, std::string("\x10\0\0\0", 4))), Contains("stored sizes differ"));
  // Changed in one of them only: refused, whichever field it is.
  CHECK_THAT(npz_error(patched(local + 30, "b")), Contains("the local header's name does not match the central directory's"));
  CHECK_THAT(npz_error(patched(central + 10, std::string("\x08\0", 2))), Contains("local header's compression method does not match"));
  CHECK_THAT(npz_error(patched(local + 6, std::string("\1\0", 2))), Contains("local header's encryption flag does not match"));
  CHECK_THAT(npz_error(patched(local + 14, "abcd")), Contains("local header's CRC-32 does not match"));
  CHECK_THAT(npz_error(patched(local + 22, std::string("\x10\0\0\0", 4))), Contains("local header's size does not match"));
  CHECK_THAT(npz_error(patched(central + 42, std::string("\x05\0\0\0", 4))), Contains("bad local header"));
  CHECK_THAT(npz_error(patched(central + 42, std::string("\xff\xff\xff\xff", 4))), Contains("lacks its zip64 sizes"));
  CHECK_THAT(npz_error(patched(local + 28, std::string("\xff\xff", 2))), Contains("run past the start of the central directory"));
  CHECK_THAT(npz_error(npy_writer::zip({{"arr_0.txt", "hello"}})), Contains("entry 'arr_0.txt' is not a .npy array"));
  CHECK_THAT(npz_error(npy_writer::zip({{"a.npy", tiny_npy()}, {"a.npy", tiny_npy()}})), Contains("holds 'a.npy' twice"));
  CHECK_THAT(npz_error(npy_writer::zip({{"\x1b]0;x\x07\xff.txt", "hello"}})), Contains("entry '\\x1b]0;x\\x07\\xff.txt' is not a .npy array"));
  std::string bad_entry = tiny_npy();
  bad_entry[6] = 9;
  CHECK_THAT(npz_error(npy_writer::zip({{"arr_0.npy", bad_entry}})), Contains("bad.npz: entry 'arr_0.npy': .npy format version 9.0"));
  npy_writer::zip_options z64;
  z64.zip64 = true;
  std::string zip64 = npy_writer::zip({{"arr_0.npy", tiny_npy()}}, z64);
  zip64.replace(zip64.size() - 22 - 20 + 8, 8, std::string("\0\0\0\0\0\0\0\0", 8));  // locator -> offset 0
  CHECK_THAT(npz_error(zip64), Contains("bad zip64 end-of-central-directory record"));
#if FREEPRUNER_TOOL_HAVE_ZLIB
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  std::string packed = npy_writer::zip({{"arr_0.npy", tiny_npy()}}, deflate);
  std::string broken = packed;
  broken[32 + 9] = static_cast<char>(broken[32 + 9] ^ 0x5a);  // inside the deflate stream
  CHECK_THAT(npz_error(broken), Contains("entry 'arr_0.npy'"));
  // A claimed size that deflate cannot reach is refused before allocating it.
  const std::size_t pc = packed.find("PK\1\2");
  packed.replace(pc + 24, 4, std::string("\0\0\0\x7f", 4));
  packed.replace(22, 4, std::string("\0\0\0\x7f", 4));
  CHECK_THAT(npz_error(packed), Contains("corrupt zip archive (claims 2130706432 bytes"));
#endif
}

TEST_CASE("every truncation of a .npy and of a .npz is an error, never a crash") {
  std::vector<std::string> files = {tiny_npy(1), tiny_npy(2), tiny_npy(3)};
  npy_writer::zip_options z64;
  z64.zip64 = true;
  std::vector<std::string> archives = {npy_writer::zip({{"arr_0.npy", tiny_npy()}, {"arr_1.npy", tiny_npy(2)}}),
                                       npy_writer::zip({{"arr_0.npy", tiny_npy()}}, z64)};
#if FREEPRUNER_TOOL_HAVE_ZLIB
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  archives.push_back(npy_writer::zip({{"arr_0.npy", tiny_npy()}}, deflate));
#endif
  for (const auto& f : files)
    for (std::size_t n = 0; n < f.size(); ++n) {
      CAPTURE(n);
      // Each file in a buffer of its own size, so ASan sees any read past it.
      CHECK_THAT(npy_error(f.substr(0, n)), Catch::Contains("bad.npy: "));
    }
  for (const auto& z : archives)
    for (std::size_t n = 0; n < z.size(); ++n) {
      CAPTURE(n);
      CHECK_THAT(npz_error(z.substr(0, n)), Catch::Contains("bad.npz"));
    }
}

TEST_CASE("random corruption of a .npy or a .npz: an error or a valid array, never a crash") {
  std::vector<std::string> files = {tiny_npy(1), tiny_npy(3), npy_writer::zip({{"arr_0.npy", tiny_npy()}, {"k.npy", tiny_npy(2)}})};
  npy_writer::zip_options z64;
  z64.zip64 = true;
  files.push_back(npy_writer::zip({{"arr_0.npy", tiny_npy()}}, z64));
#if FREEPRUNER_TOOL_HAVE_ZLIB
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  files.push_back(npy_writer::zip({{"arr_0.npy", tiny_npy()}}, deflate));
#endif
  int errors = 0, valid = 0;
  for (const auto& f : files)
    for (int trial = 0; trial < 400; ++trial) {
      std::string bad = f;
      const int flips = fptest::uniform_int(1, 4);
      for (int k = 0; k < flips; ++k)
        bad[static_cast<std::size_t>(fptest::uniform_int(0, static_cast<int>(bad.size()) - 1))] =
            static_cast<char>(fptest::uniform_int(0, 255));
      const std::string path = temp_file("corrupt.bin", bad);
      const bool zipped = f[0] == 'P';
      try {
        if (zipped) {
          for (const auto& a : npy::load_npz(path)) REQUIRE(a.count * npy::item_size(a.type) <= bad.size());
        } else {
          const auto a = npy::load_npy(path);
          REQUIRE(a.count * npy::item_size(a.type) <= bad.size());
        }
        ++valid;
      } catch (const npy::error&) {
        ++errors;
      }
    }
  CHECK(errors > 0);
  CHECK(valid > 0);
}

namespace {

// A zip end record for `entries` entries, the directory of `dir_size` bytes at `dir_offset`.
std::string end_record(std::size_t entries, std::size_t dir_size, std::size_t dir_offset) {
  std::string out;
  npy_writer::put32(out, 0x06054b50u);
  npy_writer::put32(out, 0);
  npy_writer::put16(out, static_cast<std::uint32_t>(entries));
  npy_writer::put16(out, static_cast<std::uint32_t>(entries));
  npy_writer::put32(out, static_cast<std::uint32_t>(dir_size));
  npy_writer::put32(out, static_cast<std::uint32_t>(dir_offset));
  npy_writer::put16(out, 0);
  return out;
}

}  // namespace

TEST_CASE("npz: entries that share bytes are refused before any is read") {
  // Entry 'a.npy' holds, as its data, the whole local record of 'b.npy', and
  // the directory lists both: b's bytes are read twice (a zip bomb's trick).
  const std::string b = npy_writer::zip({{"b.npy", tiny_npy()}});
  const std::size_t b_local = 30 + 5 + tiny_npy().size(), b_central = b.find("PK\1\2");
  const std::string a = npy_writer::zip({{"a.npy", b.substr(0, b_local)}});
  const std::size_t a_central = a.find("PK\1\2"), a_end = a.find("PK\5\6");
  std::string central_b = b.substr(b_central, 46 + 5);
  central_b.replace(42, 4, std::string("\x23\0\0\0", 4));  // b's local header at 35, inside a's data
  const std::string dir = a.substr(a_central, a_end - a_central) + central_b;
  const std::string bomb = a.substr(0, a_central) + dir + end_record(2, dir.size(), a_central);
  CHECK_THAT(npz_error(bomb), Catch::Contains("bad.npz: corrupt zip archive (entries 'a.npy' and 'b.npy' overlap)"));
}

TEST_CASE("npz: bytes after the end record are accepted, as numpy accepts them") {
  const auto arrays = npy::load_npz(temp_file("t.npz", npy_writer::zip({{"arr_0.npy", tiny_npy()}}) + "trailing bytes"));
  REQUIRE(arrays.size() == 1);
  CHECK(arrays[0].shape == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("npz: the duplicate-name check is linear: 150,000 entries, the last one repeating the first") {
  std::vector<npy_writer::entry> entries;
  for (int k = 0; k < 150000; ++k) entries.push_back({"arr_" + std::to_string(k) + ".npy", "x"});
  entries.push_back({"arr_0.npy", "x"});
  npy_writer::zip_options z64;  // more entries than the 16-bit count holds
  z64.zip64 = true;
  CHECK_THAT(npz_error(npy_writer::zip(entries, z64)), Catch::Contains("bad.npz: the archive holds 'arr_0.npy' twice"));
}

TEST_CASE("limits: a header is checked against --max-bytes before its data is allocated or read") {
  using Catch::Contains;
  npy::limits small;
  small.max_bytes = 20;
  const std::string path = temp_file("l.npy", tiny_npy());
  CHECK_THAT(error_of([&] { npy::load_npy(path, small); }),
             Contains("l.npy: shape (2, 3) of float32 needs 24 bytes, over the limit of 20 bytes (--max-bytes)"));
  small.max_bytes = 24;
  CHECK(npy::load_npy(path, small).count == 6);
  // Two entries of 24 bytes each: the second goes over 40.
  small.max_bytes = 40;
  const std::string two = temp_file("l.npz", npy_writer::zip({{"arr_0.npy", tiny_npy()}, {"arr_1.npy", tiny_npy()}}));
  CHECK_THAT(error_of([&] { npy::load_npz(two, small); }),
             Contains("l.npz: entry 'arr_1.npy': shape (2, 3) of float32 needs 24 bytes (24 more before it), over the limit of 40"));
#if FREEPRUNER_TOOL_HAVE_ZLIB
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  const std::string packed = temp_file("d.npz", npy_writer::zip({{"arr_0.npy", tiny_npy()}}, deflate));
  small.max_bytes = 20;
  CHECK_THAT(error_of([&] { npy::load_npz(packed, small); }), Contains("d.npz: entry 'arr_0.npy': shape (2, 3) of float32 needs 24 bytes"));
#endif
  // A sparse 5 GiB file whose header claims it all: refused from the header,
  // without reading (or allocating) the data.
  const std::string claim = npy_writer::npy(npy_writer::dict("<f4", false, {1342177280}), nullptr, 0);
  const std::string sparse = temp_file("sparse.npy", claim);
  fs::resize_file(sparse, claim.size() + (std::uintmax_t{5} << 30));
  small.max_bytes = std::uint64_t{1} << 30;
  CHECK_THAT(error_of([&] { npy::load_npy(sparse, small); }),
             Contains("sparse.npy: shape (1342177280,) of float32 needs 5368709120 bytes, over the limit of 1073741824 bytes"));
}

TEST_CASE("npy: a header longer than 65536 bytes is refused before it is read") {
  std::string big("\x93NUMPY\2\0", 8);
  npy_writer::put32(big, 1000000);
  big += std::string(1000000, ' ');
  CHECK_THAT(npy_error(big), Catch::Contains("the .npy header claims 1000000 bytes, more than the 65536 read"));
}

#if FREEPRUNER_TOOL_HAVE_ZLIB
TEST_CASE("npz: a deflate stream must end exactly at the entry's end, and hold no more than its size") {
  using Catch::Contains;
  npy_writer::zip_options deflate;
  deflate.deflate = true;
  const std::string z = npy_writer::zip({{"arr_0.npy", tiny_npy()}}, deflate);
  const std::size_t central = z.find("PK\1\2"), data_end = central;
  // Four bytes of junk after the stream, counted in both headers' compressed sizes.
  std::string junk = z.substr(0, data_end) + "junk" + z.substr(data_end);
  const auto bump = [&junk](std::size_t at) {
    const std::uint32_t v = npy::detail::le32(reinterpret_cast<const unsigned char*>(junk.data()) + at) + 4;
    std::string le;
    npy_writer::put32(le, v);
    junk.replace(at, 4, le);
  };
  bump(18);
  bump(central + 4 + 20);
  bump(junk.size() - 22 + 16);  // the directory moved by 4
  CHECK_THAT(npz_error(junk), Contains("bad.npz: entry 'arr_0.npy': corrupt zip archive (4 bytes of junk after the deflate data)"));
  // A stream that inflates past the claimed size.
  const std::string bigger = npy_writer::zip({{"arr_0.npy", tiny_npy() + "extra"}}, deflate);
  std::string lying = bigger;
  const std::size_t lc = lying.find("PK\1\2");
  std::string size;
  npy_writer::put32(size, static_cast<std::uint32_t>(tiny_npy().size()));
  lying.replace(22, 4, size);
  lying.replace(lc + 24, 4, size);
  CHECK_THAT(npz_error(lying), Contains("holds more than its size claims"));
}
#endif
