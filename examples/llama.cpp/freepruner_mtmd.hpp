#pragma once
// freepruner inside llama.cpp's multimodal library (tools/mtmd), on its public
// API only: gguf.h to read the vision tower's hyperparameters, the scheduler's
// eval callback (mtmd_context_params.cb_eval) to capture what select reads,
// and mtmd_get_output_embd for the rows to keep. Written for LLaVA-1.5's
// graph (clip_graph_llava); docs/integration-llama.cpp.md explains each step.
//
// Per mtmd context: one fp_mtmd::capture, handed to the callback as its user
// data. Per image: begin(), mtmd_encode_chunk(), then select() and gather().

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

#include <freepruner/freepruner.hpp>

namespace fp_mtmd {

// What select reads: the attention maps (flash attention off) or the queries
// and keys (flash attention on, llama.cpp's default where supported).
enum class route { maps, qk };

// The vision tower as the mmproj's GGUF metadata describes it, and the blocks
// clip_graph_llava runs: blocks 0..last_block, whose output is the feature
// layer the projector reads.
struct tower {
    int blocks     = 0;  // clip.vision.block_count
    int heads      = 0;  // clip.vision.attention.head_count
    int patches    = 0;  // (image_size / patch_size)^2
    int tokens     = 0;  // patches, plus CLS when v.class_embd exists
    bool has_cls   = false;
    int last_block = -1;
    std::vector<int> capture;  // blocks whose attention select reads, encoder order
    // The candidates, known before the encode: clip.cpp fills the projector's
    // row gather (`patches`) with i + 1 when there is a CLS embedding, and the
    // graph appends CLS after the patches. So output rows are tokens 1..N-1:
    // patch 0 never reaches the projector and CLS (token N-1) does. Neither is
    // a candidate. select() checks this against the graph's own gather.
    freepruner::options options;
};

namespace detail {

inline bool u32_key(const gguf_context * g, const char * key, int & out, std::string & error) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_UINT32) {
        error = std::string("mmproj: key ") + key + " is missing or not a uint32";
        return false;
    }
    const uint32_t v = gguf_get_val_u32(g, id);
    if (v < 1 || v > (1u << 20)) {
        error = std::string("mmproj: ") + key + " = " + std::to_string(v) + " (must be in 1..2^20)";
        return false;
    }
    out = static_cast<int>(v);
    return true;
}

// "Qcur-12" -> 12 for prefix "Qcur"; -1 when the name is not prefix-<il>.
inline int layer_of(const char * name, const char * prefix) {
    const size_t n = std::strlen(prefix);
    if (std::strncmp(name, prefix, n) != 0 || name[n] != '-') {
        return -1;
    }
    const char * p = name + n + 1;
    if (*p < '0' || *p > '9') {
        return -1;
    }
    long il = 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        il = il * 10 + (*p - '0');
        if (il > 1000000) {
            return -1;
        }
    }
    return *p == '\0' ? static_cast<int>(il) : -1;
}

// The block of an unnamed softmax: its input is mul_mat(k, q), and q is a
// view of "Qcur-<il>" (clip_graph::build_attn).
inline int layer_of_softmax(const ggml_tensor * t) {
    if (t->op != GGML_OP_SOFT_MAX || t->src[0] == nullptr || t->src[0]->op != GGML_OP_MUL_MAT) {
        return -1;
    }
    const ggml_tensor * q = t->src[0]->src[1];
    for (int depth = 0; q != nullptr && depth < 4; ++depth, q = q->src[0]) {
        const int il = layer_of(q->name, "Qcur");
        if (il >= 0) {
            return il;
        }
        if (q->op != GGML_OP_PERMUTE && q->op != GGML_OP_RESHAPE && q->op != GGML_OP_VIEW && q->op != GGML_OP_CONT) {
            return -1;
        }
    }
    return -1;
}

inline bool is_patch_gather(const ggml_tensor * t) {
    return t->op == GGML_OP_GET_ROWS && t->src[1] != nullptr && std::strcmp(t->src[1]->name, "patches") == 0;
}

inline std::string shape_of(const ggml_tensor * t) {
    return std::string(ggml_type_name(t->type)) + " [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
           ", " + std::to_string(t->ne[2]) + ", " + std::to_string(t->ne[3]) + "]";
}

}  // namespace detail

// Reads the tower from the mmproj file and plans the capture: the last
// `layers` blocks that clip_graph_llava runs (the last one, whose output the
// projector reads, gives the complementary tokens). Returns false and sets
// `error` when the file is not a LLaVA-style CLIP tower.
inline bool read_tower(const char * mmproj_path, int layers, tower & out, std::string & error) {
    gguf_init_params params = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context * g = gguf_init_from_file(mmproj_path, params);
    if (g == nullptr) {
        error = std::string("mmproj: cannot read GGUF file ") + mmproj_path;
        return false;
    }
    tower t;
    int image = 0, patch = 0;
    bool ok = detail::u32_key(g, "clip.vision.block_count", t.blocks, error) &&
              detail::u32_key(g, "clip.vision.attention.head_count", t.heads, error) &&
              detail::u32_key(g, "clip.vision.image_size", image, error) &&
              detail::u32_key(g, "clip.vision.patch_size", patch, error);
    // clip_graph_llava: with explicit feature layers it runs up to the deepest
    // one, else blocks il < block_count - 1.
    int deepest = -1;
    const int64_t fl = ok ? gguf_find_key(g, "clip.vision.feature_layer") : -1;
    if (fl >= 0) {
        if (gguf_get_kv_type(g, fl) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, fl) != GGUF_TYPE_INT32) {
            error = "mmproj: clip.vision.feature_layer is not an int32 array";
            ok = false;
        } else {
            const auto * v = static_cast<const int32_t *>(gguf_get_arr_data(g, fl));
            for (size_t i = 0; i < gguf_get_arr_n(g, fl); ++i) {
                deepest = std::max(deepest, static_cast<int>(v[i]));
            }
        }
    }
    t.has_cls = gguf_find_tensor(g, "v.class_embd") >= 0;
    gguf_free(g);
    if (!ok) {
        return false;
    }
    if (image % patch != 0 || image / patch > 1024) {
        error = "mmproj: image_size " + std::to_string(image) + " / patch_size " + std::to_string(patch) +
                " (must divide evenly, into at most 1024 patches a side)";
        return false;
    }
    t.patches    = (image / patch) * (image / patch);
    t.tokens     = t.patches + (t.has_cls ? 1 : 0);
    t.last_block = (deepest < 0 ? t.blocks - 1 : deepest) - 1;
    if (layers < 1 || t.last_block + 1 < layers || t.last_block >= t.blocks) {
        error = "mmproj: the graph runs blocks 0.." + std::to_string(t.last_block) + " of " + std::to_string(t.blocks) +
                "; cannot capture the last " + std::to_string(layers);
        return false;
    }
    for (int il = t.last_block - layers + 1; il <= t.last_block; ++il) {
        t.capture.push_back(il);
    }
    t.options.prefix_tokens = t.has_cls ? 1 : 0;
    t.options.suffix_tokens = t.has_cls ? 1 : 0;
    out = t;
    return true;
}

// Per-context capture state. The eval callback fills it during an encode;
// problems are recorded, never thrown (returning false would cancel the encode).
struct capture {
    tower  vision;
    route  input = route::qk;
    bool   armed = true;  // false: ask for nothing, as if no callback were set

    // Per image. q/k: ggml [d_head, n_head, n_pos], i.e. C order [N][H][d];
    // maps: each block's ggml [n_kv, n_q, n_head], i.e. C order [H][N][N],
    // one after another: the [L][H][N][N] that attention_view reads.
    std::vector<std::vector<float>> q, k;
    std::vector<float>              maps;
    std::vector<bool>               got_q, got_k, got_maps;
    std::vector<int32_t>            rows;  // output row r holds encoder token rows[r]
    int64_t                         rows_source = 0;  // tokens the gather reads from
    int64_t                         d_head = 0;
    int                             deepest_seen = -1;
    std::string                     error;

    capture(const tower & t, route r) : vision(t), input(r) { begin(); }

    // Clears what the last encode left (mtmd's warmup encode included).
    void begin() {
        const size_t n = vision.capture.size();
        q.assign(n, {});
        k.assign(n, {});
        got_q.assign(n, false);
        got_k.assign(n, false);
        got_maps.assign(n, false);
        rows.clear();
        rows_source  = 0;
        d_head       = 0;
        deepest_seen = -1;
        error.clear();
    }

    int slot_of(int il) const {
        const auto it = std::find(vision.capture.begin(), vision.capture.end(), il);
        return it == vision.capture.end() ? -1 : static_cast<int>(it - vision.capture.begin());
    }

    void fail(const std::string & what) {
        if (error.empty()) {
            error = what;
        }
    }

    // ggml_backend_tensor_get reads host and device buffers alike (ggml's
    // contract; only the CPU build is tested).
    bool copy_f32(const ggml_tensor * t, float * dst) {
        if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
            fail(std::string("tensor ") + t->name + " is " + detail::shape_of(t) + ", not contiguous F32");
            return false;
        }
        ggml_backend_tensor_get(t, dst, 0, ggml_nbytes(t));
        return true;
    }

    void take_qk(const ggml_tensor * t, int slot, bool is_q) {
        const int64_t n = vision.tokens, h = vision.heads;
        if (t->ne[1] != h || t->ne[2] != n || t->ne[3] != 1) {
            fail(std::string(t->name) + " is " + detail::shape_of(t) + ", expected [d_head, " + std::to_string(h) + ", " +
                 std::to_string(n) + ", 1]");
            return;
        }
        if (d_head != 0 && t->ne[0] != d_head) {
            fail(std::string(t->name) + " has d_head " + std::to_string(t->ne[0]) + ", other layers " + std::to_string(d_head));
            return;
        }
        d_head = t->ne[0];
        std::vector<float> & dst = is_q ? q[static_cast<size_t>(slot)] : k[static_cast<size_t>(slot)];
        dst.resize(static_cast<size_t>(ggml_nelements(t)));
        if (copy_f32(t, dst.data())) {
            (is_q ? got_q : got_k)[static_cast<size_t>(slot)] = true;
        }
    }

    void take_map(const ggml_tensor * t, int slot) {
        const int64_t n = vision.tokens, h = vision.heads;
        if (t->ne[0] != n || t->ne[1] != n || t->ne[2] != h || t->ne[3] != 1) {
            fail("softmax of block " + std::to_string(vision.capture[static_cast<size_t>(slot)]) + " is " +
                 detail::shape_of(t) + ", expected [" + std::to_string(n) + ", " + std::to_string(n) + ", " +
                 std::to_string(h) + ", 1]");
            return;
        }
        // Sized on the first delivery: the graph already holds a map this large.
        const auto per_layer = static_cast<size_t>(ggml_nelements(t));
        maps.resize(vision.capture.size() * per_layer);
        if (copy_f32(t, maps.data() + static_cast<size_t>(slot) * per_layer)) {
            got_maps[static_cast<size_t>(slot)] = true;
        }
    }

    void take_rows(const ggml_tensor * t) {
        const ggml_tensor * idx = t->src[1];
        if (idx->type != GGML_TYPE_I32 || idx->ne[1] != 1 || idx->ne[2] != 1 || idx->ne[3] != 1) {
            fail(std::string("the projector's row gather reads ") + detail::shape_of(idx) + ", expected I32 [rows]");
            return;
        }
        rows.resize(static_cast<size_t>(idx->ne[0]));
        ggml_backend_tensor_get(idx, rows.data(), 0, ggml_nbytes(idx));
        rows_source = t->src[0]->ne[1];
    }

    // The scheduler's eval callback (ggml_backend_sched_eval_callback).
    bool eval(ggml_tensor * t, bool ask) {
        if (!armed) {
            return !ask;
        }
        const int il_q = detail::layer_of(t->name, "Qcur");
        if (ask && il_q > deepest_seen) {
            deepest_seen = il_q;
        }
        int slot = -1;
        bool is_q = false, is_k = false, is_map = false;
        if (input == route::qk) {
            is_q = il_q >= 0;
            is_k = !is_q && detail::layer_of(t->name, "Kcur") >= 0;
            if (is_q || is_k) {
                slot = slot_of(is_q ? il_q : detail::layer_of(t->name, "Kcur"));
            }
        } else if (t->op == GGML_OP_SOFT_MAX) {
            slot   = slot_of(detail::layer_of_softmax(t));
            is_map = slot >= 0;
        }
        const bool rows_node = detail::is_patch_gather(t);
        if (ask) {
            return slot >= 0 || rows_node;
        }
        if (rows_node) {
            take_rows(t);
        } else if (is_map) {
            take_map(t, slot);
        } else if (slot >= 0) {
            take_qk(t, slot, is_q);
        }
        return true;
    }

    static bool callback(ggml_tensor * t, bool ask, void * user_data) {
        return static_cast<capture *>(user_data)->eval(t, ask);
    }
};

// The result for one image: the kept encoder tokens, the output rows that
// hold them (ascending) and the options select ran with.
struct pruned {
    freepruner::selection kept;
    std::vector<int32_t>  out_rows;
    freepruner::options   options;
    int64_t               candidates = 0;
};

// Checks the capture after mtmd_encode_chunk, derives the candidates from the
// graph's own row gather, and selects. Never throws; false with `error` set.
// `parallel`: the engine's threads for the Q/K route's per-head passes.
inline bool select(capture & cap, const freepruner::budget & budget, pruned & out, std::string & error,
                   const freepruner::executor & parallel = {}) {
    const tower & v = cap.vision;
    if (!cap.error.empty()) {
        error = cap.error;
        return false;
    }
    if (cap.deepest_seen != v.last_block) {
        error = "the encode ran blocks 0.." + std::to_string(cap.deepest_seen) + " but the mmproj metadata says 0.." +
                std::to_string(v.last_block) + " (is this a LLaVA-style graph?)";
        return false;
    }
    for (size_t s = 0; s < v.capture.size(); ++s) {
        const bool got = cap.input == route::qk ? cap.got_q[s] && cap.got_k[s] : cap.got_maps[s];
        if (!got) {
            error = "block " + std::to_string(v.capture[s]) + " was not captured" +
                    (cap.input == route::maps ? " (the maps route needs flash attention off)" : "");
            return false;
        }
    }
    // Output row r is encoder token rows[r]. The candidates are the patches
    // that reach an output row; CLS (the last token in this graph) is never
    // kept even where llama.cpp hands it to the projector.
    if (cap.rows.empty() || cap.rows_source != v.tokens) {
        error = "the projector's row gather was not seen or reads " + std::to_string(cap.rows_source) + " tokens, not " +
                std::to_string(v.tokens);
        return false;
    }
    const int n = v.tokens, cls = v.has_cls ? n - 1 : -1;
    std::vector<int32_t> row_of(static_cast<size_t>(n), -1);
    int lo = n, hi = -1;
    for (size_t r = 0; r < cap.rows.size(); ++r) {
        const int t = cap.rows[r];
        if (t < 0 || t >= n || row_of[static_cast<size_t>(t)] >= 0) {
            error = "the projector's row gather reads token " + std::to_string(t) + " at row " + std::to_string(r) +
                    " (out of range or twice)";
            return false;
        }
        row_of[static_cast<size_t>(t)] = static_cast<int32_t>(r);
        if (t != cls) {
            lo = std::min(lo, t);
            hi = std::max(hi, t);
        }
    }
    for (int t = lo; t <= hi; ++t) {
        if (row_of[static_cast<size_t>(t)] < 0 || t == cls) {
            error = "the patches that reach the projector are not one contiguous range (token " + std::to_string(t) +
                    " has no row)";
            return false;
        }
    }
    if (hi < lo || lo != v.options.prefix_tokens || n - 1 - hi != v.options.suffix_tokens) {
        error = "the projector reads patches " + std::to_string(lo) + ".." + std::to_string(hi) + " of tokens 0.." +
                std::to_string(n - 1) + ", not the planned " + std::to_string(v.options.prefix_tokens) + ".." +
                std::to_string(n - 1 - v.options.suffix_tokens) + " (has clip.cpp's row gather changed?)";
        return false;
    }
    out.options    = v.options;
    out.candidates = hi - lo + 1;

    freepruner::status st;
    if (cap.input == route::qk) {
        using tensor = freepruner::qk_tensor<const float>;
        std::vector<freepruner::qk_layer<const float>> layers;
        for (size_t s = 0; s < v.capture.size(); ++s) {
            const auto d = static_cast<freepruner::index_t>(cap.d_head);
            // clip_graph's kq_scale is 1/sqrt(d_head), make_qk_layer's default.
            layers.push_back(freepruner::make_qk_layer(tensor::tokens_major(cap.q[s].data(), v.heads, n, d),
                                                       tensor::tokens_major(cap.k[s].data(), v.heads, n, d)));
        }
        st = freepruner::try_select(layers, budget, out.options, out.kept, parallel);
    } else {
        const freepruner::attention_view<const float> view(
            cap.maps.data(), static_cast<freepruner::index_t>(v.capture.size()), v.heads, n);
        st = freepruner::try_select(view, budget, out.options, out.kept);
    }
    if (!st) {
        error = "freepruner::select: " + st.message();
        return false;
    }
    out.out_rows.clear();
    for (const auto t : out.kept.indices) {
        out.out_rows.push_back(row_of[static_cast<size_t>(t)]);
    }
    std::sort(out.out_rows.begin(), out.out_rows.end());
    return true;
}

// Copies the kept rows of the image embeddings ([rows][n_embd], what
// mtmd_get_output_embd returns) into `dst`, in row order.
inline void gather(const float * embd, int64_t n_embd, const pruned & p, std::vector<float> & dst) {
    dst.resize(p.out_rows.size() * static_cast<size_t>(n_embd));
    for (size_t i = 0; i < p.out_rows.size(); ++i) {
        std::memcpy(dst.data() + i * static_cast<size_t>(n_embd),
                    embd + static_cast<size_t>(p.out_rows[i]) * static_cast<size_t>(n_embd),
                    static_cast<size_t>(n_embd) * sizeof(float));
    }
}

}  // namespace fp_mtmd
