// Selects from a tiny hand-made map and checks the answer.
#include <cstdio>

#include <freepruner/freepruner.hpp>

int main() {
  // One layer, one head, 4 tokens; every query attends mostly to token 2.
  const float maps[16] = {0.1f, 0.1f, 0.7f, 0.1f,  //
                          0.1f, 0.1f, 0.7f, 0.1f,  //
                          0.1f, 0.1f, 0.7f, 0.1f,  //
                          0.1f, 0.1f, 0.7f, 0.1f};
  const freepruner::attention_view<const float> v(maps, 1, 1, 4);
  const auto s = freepruner::select(v, freepruner::budget::count(1));
  std::printf("freepruner %s kept token %d\n", FREEPRUNER_VERSION_STRING, s.indices.empty() ? -1 : s.indices[0]);
  return s.indices.size() == 1 && s.indices[0] == 2 ? 0 : 1;
}
