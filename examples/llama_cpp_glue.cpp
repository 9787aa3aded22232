// freepruner in llama.cpp's multimodal encoder (tools/mtmd): the code an
// engine author pastes, for the attention-map route (flash attention off).
// docs/integration-llama.cpp.md explains each step and the Q/K route.
//
// The block between "fake ggml" markers stands in for the few declarations
// of ggml.h / ggml-backend.h this code uses, so the file compiles and runs
// without llama.cpp; in llama.cpp, delete it and include the real headers.
// The file is built with llama.cpp's warning flags as errors and run as a
// test: main() plays the encoder, calling the eval callback the way
// ggml_backend_sched does (ask, then deliver), on random softmax maps.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// ---- fake ggml (begin): the real ggml_tensor has more fields; these are the ones used ----
enum ggml_type { GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1 };
struct ggml_tensor {
    enum ggml_type type;
    int64_t        ne[4];   // ne[0] is the fastest dimension
    size_t         nb[4];   // strides in bytes
    void *         data;
    char           name[64];
};
// ggml-backend.h: copies from wherever the tensor lives (host or device).
static void ggml_backend_tensor_get(const struct ggml_tensor * tensor, void * data, size_t offset, size_t size) {
    std::memcpy(data, static_cast<const char *>(tensor->data) + offset, size);
}
// ---- fake ggml (end) ----

#include <freepruner/freepruner.hpp>
#include <freepruner/presets.hpp>

// ============================================================================
// Engine side. In clip.cpp's clip_graph::build_attn, name the softmax so the
// eval callback can find it (it is unnamed; this is the one line to add):
//
//     kq = ggml_soft_max_ext(ctx0, kq, kq_mask, kq_scale, 0.0f);
//     ...
//     cb(kq, "kq_soft_max", il);   // -> "kq_soft_max-<il>", F32 [n_kv, n_q, n_head]
//
// and create the mtmd context with flash attention off and the callback:
//
//     mparams.flash_attn_type   = LLAMA_FLASH_ATTN_TYPE_DISABLED;
//     mparams.cb_eval           = fp_eval_callback;
//     mparams.cb_eval_user_data = &capture;
// ============================================================================

// What the engine keeps next to its mtmd context (cb_eval's user data).
struct fp_capture {
    freepruner::preset preset;    // llama.cpp's CLIP graph: by_name("llava-1.5-cls-last")
    std::vector<float> maps;      // [L][H][N][N]: one slot per preset.capture_layers entry
    std::vector<bool>  captured;  // which slots are filled for the current image
    std::string        error;     // the first problem seen, empty if none
};

// Call before each encode: sizes the buffer, forgets the last image.
static void fp_capture_begin(fp_capture & cap) {
    const auto & p = cap.preset;
    const size_t per_layer = static_cast<size_t>(p.heads * p.tokens * p.tokens);
    cap.maps.assign(per_layer * p.capture_layers.size(), 0.0f);
    cap.captured.assign(p.capture_layers.size(), false);
    cap.error.clear();
}

// "<prefix>-<il>" -> il; -1 for any other name.
static int fp_layer_of(const char * name, const char * prefix) {
    const size_t n = std::strlen(prefix);
    if (std::strncmp(name, prefix, n) != 0 || name[n] != '-' || name[n + 1] == '\0') {
        return -1;
    }
    int il = 0;
    for (const char * c = name + n + 1; *c != '\0'; ++c) {
        if (*c < '0' || *c > '9' || il > 100000) {
            return -1;
        }
        il = il * 10 + (*c - '0');
    }
    return il;
}

// The slot of encoder layer il among the captured layers, or -1.
static int fp_slot_of_layers(const std::vector<freepruner::index_t> & layers, int il) {
    for (size_t s = 0; s < layers.size(); ++s) {
        if (layers[s] == il) {
            return static_cast<int>(s);
        }
    }
    return -1;
}

// ggml_backend_sched_eval_callback: with ask = true the scheduler asks
// whether we want tensor t; with ask = false it hands over the computed
// tensor. Returning false would cancel the encode, so problems are recorded
// and the encode goes on (fp_select reports them).
static bool fp_eval_callback(struct ggml_tensor * t, bool ask, void * user_data) {
    auto & cap = *static_cast<fp_capture *>(user_data);
    const int slot = fp_slot_of_layers(cap.preset.capture_layers, fp_layer_of(t->name, "kq_soft_max"));
    if (ask) {
        return slot >= 0;
    }
    if (slot < 0) {
        return true;
    }
    const int64_t n = cap.preset.tokens, h = cap.preset.heads;
    // ggml order [n_kv, n_q, n_head] is C order [head][query][key]: select's layout.
    if (t->type != GGML_TYPE_F32 || t->ne[0] != n || t->ne[1] != n || t->ne[2] != h || t->ne[3] != 1 ||
        t->nb[0] != sizeof(float)) {
        if (cap.error.empty()) {
            cap.error = std::string(t->name) + ": expected F32 [" + std::to_string(n) + ", " + std::to_string(n) + ", " +
                        std::to_string(h) + "] with contiguous rows; got [" + std::to_string(t->ne[0]) + ", " +
                        std::to_string(t->ne[1]) + ", " + std::to_string(t->ne[2]) + ", " + std::to_string(t->ne[3]) +
                        "] of type " + std::to_string(static_cast<int>(t->type));
        }
        return true;
    }
    float * dst = cap.maps.data() + static_cast<size_t>(slot) * static_cast<size_t>(h * n * n);
    const size_t row_bytes = static_cast<size_t>(n) * sizeof(float);
    if (t->nb[1] == row_bytes && t->nb[2] == row_bytes * static_cast<size_t>(n)) {
        ggml_backend_tensor_get(t, dst, 0, row_bytes * static_cast<size_t>(n * h));  // one copy
    } else {
        for (int64_t hh = 0; hh < h; ++hh) {
            for (int64_t q = 0; q < n; ++q) {
                ggml_backend_tensor_get(t, dst + (hh * n + q) * n, static_cast<size_t>(hh) * t->nb[2] + static_cast<size_t>(q) * t->nb[1], row_bytes);
            }
        }
    }
    cap.captured[static_cast<size_t>(slot)] = true;
    return true;
}

// After the encode: the kept token indices (ascending, in the encoder's
// token order), exactly budget's count. Returns false with a message on
// failure (never throws).
static bool fp_select(const fp_capture & cap, const freepruner::budget & b, std::vector<int32_t> & kept, std::string & error) {
    if (!cap.error.empty()) {
        error = cap.error;
        return false;
    }
    for (size_t s = 0; s < cap.captured.size(); ++s) {
        if (!cap.captured[s]) {
            error = "layer " + std::to_string(cap.preset.capture_layers[s]) +
                    " was not captured: is kq_soft_max named in build_attn, flash attention off, and the layer run?";
            return false;
        }
    }
    const auto & p = cap.preset;
    const freepruner::attention_view<const float> maps(cap.maps.data(), static_cast<freepruner::index_t>(p.capture_layers.size()), p.heads, p.tokens);
    freepruner::selection sel;
    const freepruner::status st = freepruner::try_select(maps, b, p.select_options, sel);
    if (!st.ok()) {
        error = st.message();
        return false;
    }
    kept = sel.indices;
    return true;
}

// Compacts the projector's output rows (one per patch, n_embd floats each)
// to the kept tokens, in place; returns the rows left. An encoder token i is
// output row i - prefix (the graph drops CLS; with CLS last, prefix is 0).
// LLaVA's MLP projector is per token, so keeping rows after it equals
// keeping them before.
static int64_t fp_gather_rows(float * embd, int64_t n_embd, const std::vector<int32_t> & kept, int64_t prefix) {
    int64_t out = 0;
    for (const int32_t i : kept) {
        const int64_t row = i - prefix;
        if (row != out) {
            std::memmove(embd + out * n_embd, embd + row * n_embd, static_cast<size_t>(n_embd) * sizeof(float));
        }
        ++out;
    }
    return out;
}

#if FREEPRUNER_GLUE_QK
// ============================================================================
// The Q/K route (flash attention on, the default where the backend has it):
// no softmax tensor exists, but the Q and K entering build_attn are named
// "Qcur-<il>" / "Kcur-<il>" in the LLaVA graph, F32 [d_head, n_head, n_pos]
// ([token][head][dim] in C order), and the scheduler offers them to cb_eval
// as well. freepruner computes the attention statistics from them without
// forming the N x N maps. (Graphs that rotate Q/K after naming them use the
// later names: Qwen2-VL's "Qcur_rope-<il>".)
// ============================================================================
#include <freepruner/qk.hpp>

struct fp_qk_capture {
    freepruner::preset preset;
    int64_t d_head = 0;                      // read from the first Q: ne[0]
    std::vector<std::vector<float>> q, k;    // per slot: [n_pos][n_head][d_head]
    std::vector<bool> got_q, got_k;
    std::string error;
};

static void fp_qk_begin(fp_qk_capture & cap) {
    const size_t slots = cap.preset.capture_layers.size();
    cap.q.assign(slots, {});
    cap.k.assign(slots, {});
    cap.got_q.assign(slots, false);
    cap.got_k.assign(slots, false);
    cap.error.clear();
}

static void fp_qk_take(fp_qk_capture & cap, const struct ggml_tensor * t, std::vector<float> & dst, std::vector<bool>::reference got) {
    const int64_t n = cap.preset.tokens, h = cap.preset.heads;
    if (cap.d_head == 0) {
        cap.d_head = t->ne[0];
    }
    const size_t bytes = static_cast<size_t>(cap.d_head * h * n) * sizeof(float);
    if (t->type != GGML_TYPE_F32 || t->ne[0] != cap.d_head || t->ne[1] != h || t->ne[2] != n ||
        t->nb[0] != sizeof(float) || t->nb[1] != static_cast<size_t>(cap.d_head) * sizeof(float) ||
        t->nb[2] != static_cast<size_t>(cap.d_head * h) * sizeof(float)) {
        if (cap.error.empty()) {
            cap.error = std::string(t->name) + ": expected contiguous F32 [d_head, " + std::to_string(h) + ", " + std::to_string(n) + "]";
        }
        return;
    }
    dst.resize(bytes / sizeof(float));
    ggml_backend_tensor_get(t, dst.data(), 0, bytes);
    got = true;
}

static bool fp_qk_eval_callback(struct ggml_tensor * t, bool ask, void * user_data) {
    auto & cap = *static_cast<fp_qk_capture *>(user_data);
    const int sq = fp_slot_of_layers(cap.preset.capture_layers, fp_layer_of(t->name, "Qcur"));
    const int sk = fp_slot_of_layers(cap.preset.capture_layers, fp_layer_of(t->name, "Kcur"));
    if (ask) {
        return sq >= 0 || sk >= 0;
    }
    if (sq >= 0) {
        fp_qk_take(cap, t, cap.q[static_cast<size_t>(sq)], cap.got_q[static_cast<size_t>(sq)]);
    }
    if (sk >= 0) {
        fp_qk_take(cap, t, cap.k[static_cast<size_t>(sk)], cap.got_k[static_cast<size_t>(sk)]);
    }
    return true;
}

static bool fp_qk_select(const fp_qk_capture & cap, const freepruner::budget & b, std::vector<int32_t> & kept, std::string & error) {
    if (!cap.error.empty()) {
        error = cap.error;
        return false;
    }
    const auto & p = cap.preset;
    std::vector<freepruner::qk_layer<const float>> layers;
    for (size_t s = 0; s < p.capture_layers.size(); ++s) {
        if (!cap.got_q[s] || !cap.got_k[s]) {
            error = "Qcur/Kcur of layer " + std::to_string(p.capture_layers[s]) + " was not captured";
            return false;
        }
        const auto q = freepruner::qk_tensor<const float>::tokens_major(cap.q[s].data(), p.heads, p.tokens, cap.d_head);
        const auto k = freepruner::qk_tensor<const float>::tokens_major(cap.k[s].data(), p.heads, p.tokens, cap.d_head);
        layers.push_back(freepruner::make_qk_layer(q, k, 1.0 / std::sqrt(static_cast<double>(cap.d_head))));  // clip_graph's kq_scale
    }
    freepruner::selection sel;
    const freepruner::status st = freepruner::try_select(layers, b, p.select_options, sel);
    if (!st.ok()) {
        error = st.message();
        return false;
    }
    kept = sel.indices;
    return true;
}
#endif  // FREEPRUNER_GLUE_QK

// ============================================================================
// The simulation: llama.cpp's LLaVA graph runs layers 0..22 and offers each
// layer's tensors to the callback; only the captured softmaxes are taken.
// ============================================================================

namespace fp_glue_test {

static std::vector<float> random_softmax(int64_t heads, int64_t n, int64_t row_stride, std::mt19937 & rng) {
    std::normal_distribution<float> normal(0.0f, 1.5f);
    std::vector<float> out(static_cast<size_t>(heads * n * row_stride), -1.0f);  // padding stays -1
    for (int64_t r = 0; r < heads * n; ++r) {
        float * row = &out[static_cast<size_t>(r * row_stride)];
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
            row[j] = std::exp(normal(rng));
            sum += row[j];
        }
        for (int64_t j = 0; j < n; ++j) {
            row[j] /= sum;
        }
    }
    return out;
}

static int run() {
    fp_capture cap;
    cap.preset = freepruner::presets::by_name("llava-1.5-cls-last");
    fp_capture_begin(cap);

    const int64_t n = cap.preset.tokens, h = cap.preset.heads;
    std::mt19937 rng(3);
    std::vector<std::vector<float>> offered(static_cast<size_t>(cap.preset.feature_layer + 1));
    int asked = 0;
    for (int il = 0; il <= cap.preset.feature_layer; ++il) {
        // Tensors of other names are offered too and must be declined.
        ggml_tensor q = {};
        std::snprintf(q.name, sizeof q.name, "Qcur-%d", il);
        if (fp_eval_callback(&q, true, &cap)) {
            return 1;
        }
        ggml_tensor t = {};
        t.type = GGML_TYPE_F32;
        std::snprintf(t.name, sizeof t.name, "kq_soft_max-%d", il);
        if (!fp_eval_callback(&t, true, &cap)) {
            continue;
        }
        ++asked;
        const int64_t stride = il % 2 == 0 ? n + 3 : n;  // padded rows on one layer: the strided copy
        offered[static_cast<size_t>(il)] = random_softmax(h, n, stride, rng);
        t.ne[0] = n; t.ne[1] = n; t.ne[2] = h; t.ne[3] = 1;
        t.nb[0] = sizeof(float);
        t.nb[1] = static_cast<size_t>(stride) * sizeof(float);
        t.nb[2] = t.nb[1] * static_cast<size_t>(n);
        t.nb[3] = t.nb[2] * static_cast<size_t>(h);
        t.data = offered[static_cast<size_t>(il)].data();
        if (!fp_eval_callback(&t, false, &cap)) {
            return 1;
        }
    }

    const freepruner::budget b = freepruner::budget::count(288);
    std::vector<int32_t> kept;
    std::string error;
    if (asked != static_cast<int>(cap.preset.capture_layers.size()) || !fp_select(cap, b, kept, error)) {
        std::fprintf(stderr, "glue: %s\n", error.c_str());
        return 1;
    }
    // The count fixed at tokenize time (clip_n_output_tokens) must be what select keeps.
    if (static_cast<int64_t>(kept.size()) != *cap.preset.kept_tokens(b)) {
        return 1;
    }
    // The same answer as select on the offered maps directly (copies are exact).
    std::vector<float> direct;
    for (int l : {21, 22}) {
        const auto & m = offered[static_cast<size_t>(l)];
        const int64_t stride = l % 2 == 0 ? n + 3 : n;
        for (int64_t r = 0; r < h * n; ++r) {
            direct.insert(direct.end(), m.begin() + r * stride, m.begin() + r * stride + n);
        }
    }
    const auto want = freepruner::select(freepruner::attention_view<const float>(direct.data(), 2, h, n), b, cap.preset.select_options);
    if (want.indices != kept || kept.back() >= n - 1) {  // never CLS (token 576)
        return 1;
    }

    // The projector's output: 576 patch rows (CLS dropped), row i tagged with i.
    const int64_t n_embd = 8;
    std::vector<float> embd(static_cast<size_t>(576 * n_embd));
    for (size_t k = 0; k < embd.size(); ++k) {
        embd[k] = static_cast<float>(k / static_cast<size_t>(n_embd));
    }
    const int64_t rows = fp_gather_rows(embd.data(), n_embd, kept, cap.preset.prefix_tokens());
    for (int64_t r = 0; r < rows; ++r) {
        if (embd[static_cast<size_t>(r * n_embd)] != static_cast<float>(kept[static_cast<size_t>(r)])) {
            return 1;
        }
    }
    // A layer that was never delivered is reported, not read.
    fp_capture_begin(cap);
    if (fp_select(cap, b, kept, error) || error.find("layer 21 was not captured") == std::string::npos) {
        return 1;
    }
    std::printf("llama.cpp glue: captured layers 21, 22 of %s; kept %zu of 576 patches; rows gathered after the projector\n",
                cap.preset.name.c_str(), static_cast<size_t>(rows));
#if FREEPRUNER_GLUE_QK
    // The Q/K route: Qcur-<il> and Kcur-<il>, [d_head, n_head, n_pos].
    fp_qk_capture qk;
    qk.preset = cap.preset;
    fp_qk_begin(qk);
    const int64_t d_head = 8;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int il = 0; il <= qk.preset.feature_layer; ++il) {
        for (const char * what : {"Qcur", "Kcur", "Vcur"}) {
            ggml_tensor t = {};
            std::snprintf(t.name, sizeof t.name, "%s-%d", what, il);
            if (!fp_qk_eval_callback(&t, true, &qk)) {
                continue;
            }
            std::vector<float> values(static_cast<size_t>(d_head * h * n));
            for (auto & v : values) {
                v = normal(rng);
            }
            t.type = GGML_TYPE_F32;
            t.ne[0] = d_head; t.ne[1] = h; t.ne[2] = n; t.ne[3] = 1;
            t.nb[0] = sizeof(float);
            t.nb[1] = t.nb[0] * static_cast<size_t>(d_head);
            t.nb[2] = t.nb[1] * static_cast<size_t>(h);
            t.nb[3] = t.nb[2] * static_cast<size_t>(n);
            t.data = values.data();
            fp_qk_eval_callback(&t, false, &qk);
        }
    }
    std::vector<int32_t> kept_qk;
    if (!fp_qk_select(qk, b, kept_qk, error) || static_cast<int64_t>(kept_qk.size()) != *qk.preset.kept_tokens(b) ||
        kept_qk.back() >= n - 1) {
        std::fprintf(stderr, "glue (Q/K): %s\n", error.c_str());
        return 1;
    }
    std::printf("llama.cpp glue, Q/K route: kept %zu of 576 patches from Qcur/Kcur of layers 21, 22\n", kept_qk.size());
#endif
    return 0;
}

}  // namespace fp_glue_test

int main() {
    return fp_glue_test::run();
}
