// LLaVA in llama.cpp with freepruner between the vision encoder and the LLM,
// on llama.cpp's public API only (llama.h, mtmd.h, mtmd-helper.h, gguf.h):
// tokenize a prompt with an image, encode the image while capturing what
// select reads, select, gather the kept rows of the image embeddings, decode
// exactly those into the LLM at consecutive positions, and generate.
//
//   llava_prune -m text.gguf --mmproj mmproj.gguf --image photo.jpg --budget 288
//
// --route qk (flash attention on) or maps (off); --budget off runs the stock
// pipeline. --dump DIR writes what the tests compare (.npy); --json FILE a summary;
// --repeat R times R more encodes of the image without and with the capture.

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "freepruner_mtmd.hpp"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace {

struct args {
    std::string model, mmproj, image, prompt, dump, json, budget = "0.5";
    fp_mtmd::route input = fp_mtmd::route::qk;
    int  n_predict = 8, threads = 2, layers = 2, repeat = 0;
    bool verbose = false;
};

[[noreturn]] void usage_error(const std::string & what) {
    std::fprintf(stderr, "llava_prune: %s\n(see the header of examples/llama.cpp/llava_prune.cpp)\n", what.c_str());
    std::exit(2);
}

int int_arg(const char * flag, const char * v, int lo, int hi) {
    char * end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < lo || x > hi) {
        usage_error(std::string(flag) + " = \"" + v + "\" (must be an integer in " + std::to_string(lo) + ".." +
                    std::to_string(hi) + ")");
    }
    return static_cast<int>(x);
}

args parse(int argc, char ** argv) {
    args a;
    for (int i = 1; i < argc; ++i) {
        const std::string f = argv[i];
        if (f == "-v") {
            a.verbose = true;
            continue;
        }
        if (i + 1 >= argc) {
            usage_error("option " + f + " needs a value");
        }
        const char * v = argv[++i];
        if (f == "-m") {
            a.model = v;
        } else if (f == "--mmproj") {
            a.mmproj = v;
        } else if (f == "--image") {
            a.image = v;
        } else if (f == "-p") {
            a.prompt = v;
        } else if (f == "--budget") {
            a.budget = v;
        } else if (f == "--route") {
            const std::string r = v;
            if (r != "qk" && r != "maps") {
                usage_error("--route = \"" + r + "\" (must be qk or maps)");
            }
            a.input = r == "qk" ? fp_mtmd::route::qk : fp_mtmd::route::maps;
        } else if (f == "-n") {
            a.n_predict = int_arg("-n", v, 0, 4096);
        } else if (f == "-t") {
            a.threads = int_arg("-t", v, 1, 1024);
        } else if (f == "--repeat") {
            a.repeat = int_arg("--repeat", v, 0, 1000);
        } else if (f == "--layers") {
            a.layers = int_arg("--layers", v, 1, 1024);
        } else if (f == "--dump") {
            a.dump = v;
        } else if (f == "--json") {
            a.json = v;
        } else {
            usage_error("unknown option " + f);
        }
    }
    if (a.model.empty() || a.mmproj.empty() || a.image.empty()) {
        usage_error("-m, --mmproj and --image are required");
    }
    if (a.prompt.empty()) {
        a.prompt = std::string("USER: ") + mtmd_default_marker() + "\nDescribe the image. ASSISTANT:";
    }
    return a;
}

// "off", "adaptive", a count ("288") or a ratio ("0.5"); false for "off".
// The values are checked by freepruner::kept_tokens, with its messages.
bool parse_budget(const std::string & s, freepruner::budget & b) {
    if (s == "off") {
        return false;
    }
    if (s == "adaptive") {
        b = freepruner::budget::adaptive();
        return true;
    }
    char * end = nullptr;
    if (s.find_first_of(".eEn") == std::string::npos) {
        const long long m = std::strtoll(s.c_str(), &end, 10);
        b = freepruner::budget::count(static_cast<freepruner::index_t>(m));
    } else {
        b = freepruner::budget::ratio(std::strtod(s.c_str(), &end));
    }
    if (end == s.c_str() || *end != '\0') {
        usage_error("--budget = \"" + s + "\" (must be off, adaptive, a count or a ratio)");
    }
    return true;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A C-order .npy file of float32 or int32.
bool write_npy(const std::string & path, const void * data, const char * dtype, size_t elem,
               const std::vector<int64_t> & shape) {
    std::string dims;
    size_t      n = 1;
    for (const int64_t d : shape) {
        dims += std::to_string(d) + ", ";
        n *= static_cast<size_t>(d);
    }
    if (shape.size() > 1) {
        dims.resize(dims.size() - 2);
    }
    std::string header = "{'descr': '" + std::string(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header += '\n';
    FILE * f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
        return false;
    }
    const unsigned char magic[8] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0 };
    const unsigned char len[2]   = { static_cast<unsigned char>(header.size() & 0xff),
                                     static_cast<unsigned char>(header.size() >> 8) };
    bool ok = std::fwrite(magic, 1, 8, f) == 8 && std::fwrite(len, 1, 2, f) == 2 &&
              std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
              (n == 0 || std::fwrite(data, elem, n, f) == n);
    ok = std::fclose(f) == 0 && ok;
    return ok;
}

// Decodes tokens or embeddings (one of the two) at positions pos0.. in
// batches of n_batch; logits for the last one when `logits_last`.
bool decode(llama_context * lctx, const llama_token * tokens, const float * embd, int64_t n, int64_t n_embd,
            llama_pos pos0, int32_t n_batch, bool logits_last) {
    llama_batch batch = llama_batch_init(n_batch, embd != nullptr ? static_cast<int32_t>(n_embd) : 0, 1);
    bool ok = true;
    for (int64_t i0 = 0; ok && i0 < n; i0 += n_batch) {
        const int32_t m = static_cast<int32_t>(std::min<int64_t>(n_batch, n - i0));
        for (int32_t j = 0; j < m; ++j) {
            const int64_t i = i0 + j;
            if (embd != nullptr) {
                std::memcpy(batch.embd + static_cast<size_t>(j) * static_cast<size_t>(n_embd),
                            embd + static_cast<size_t>(i) * static_cast<size_t>(n_embd),
                            static_cast<size_t>(n_embd) * sizeof(float));
            } else {
                batch.token[j] = tokens[i];
            }
            batch.pos[j]       = pos0 + static_cast<llama_pos>(i);
            batch.n_seq_id[j]  = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j]    = logits_last && i == n - 1;
        }
        batch.n_tokens = m;
        ok             = llama_decode(lctx, batch) == 0;
    }
    llama_batch_free(batch);
    return ok;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct report;
void bench(mtmd_context * mctx, const mtmd_input_chunk * chunk, fp_mtmd::capture & cap, const freepruner::budget & budget,
           const freepruner::executor & parallel, int repeat, report & out);

struct report {
    int64_t rows = 0, decoded = 0, kv_image = 0, prompt_positions = 0, generated = 0;
    double  encode_ms = 0, select_ms = 0;
    // --repeat: medians of the plain encode, the encode with the capture, select.
    double  bench_plain_ms = 0, bench_capture_ms = 0, bench_select_ms = 0;
    fp_mtmd::pruned p;
    std::string text;
    std::vector<llama_token> generated_tokens;
};

template <class T> std::string json_list(const std::vector<T> & v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
        s += (i ? "," : "") + std::to_string(v[i]);
    }
    return s + "]";
}

std::string json_string(const std::string & s) {
    std::string o = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            o += buf;
        } else {
            o += c;
        }
    }
    return o + "\"";
}

// Encodes `repeat` more times, the plain encode and the captured one in turn
// (the capture's cost is its copies and the graph splits it asks for).
void bench(mtmd_context * mctx, const mtmd_input_chunk * chunk, fp_mtmd::capture & cap, const freepruner::budget & budget,
           const freepruner::executor & parallel, int repeat, report & out) {
    std::vector<double> plain, captured, selected;
    std::string error;
    fp_mtmd::pruned p;
    for (int i = 0; i < repeat; ++i) {
        cap.armed     = false;
        auto t0       = std::chrono::steady_clock::now();
        const bool ok = mtmd_encode_chunk(mctx, chunk) == 0;
        plain.push_back(ms_since(t0));
        cap.armed = true;
        cap.begin();
        t0 = std::chrono::steady_clock::now();
        if (!ok || mtmd_encode_chunk(mctx, chunk) != 0) {
            break;
        }
        captured.push_back(ms_since(t0));
        t0 = std::chrono::steady_clock::now();
        if (!fp_mtmd::select(cap, budget, p, error, parallel)) {
            break;
        }
        selected.push_back(ms_since(t0));
    }
    if (selected.size() == static_cast<size_t>(repeat)) {
        out.bench_plain_ms   = median(plain);
        out.bench_capture_ms = median(captured);
        out.bench_select_ms  = median(selected);
    }
}

int run(const args & a) {
    freepruner::budget budget = freepruner::budget::adaptive();
    const bool         prune  = parse_budget(a.budget, budget);

    std::string error;
    fp_mtmd::tower vision;
    if (!fp_mtmd::read_tower(a.mmproj.c_str(), a.layers, vision, error)) {
        std::fprintf(stderr, "llava_prune: %s\n", error.c_str());
        return 1;
    }
    fp_mtmd::capture cap(vision, a.input);
    // What an engine needs at tokenize time: the image's token count.
    std::optional<freepruner::index_t> expected;
    if (prune) {
        try {
            expected = freepruner::kept_tokens(budget, vision.tokens, vision.options);
        } catch (const freepruner::error & e) {
            usage_error("--budget = \"" + a.budget + "\": " + e.what());
        }
    }

    llama_model_params mp = llama_model_default_params();
    llama_model * model   = llama_model_load_from_file(a.model.c_str(), mp);
    if (model == nullptr) {
        std::fprintf(stderr, "llava_prune: cannot load the text model %s\n", a.model.c_str());
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx                = 4096;
    cp.n_batch              = 1024;
    cp.n_threads = cp.n_threads_batch = a.threads;
    llama_context * lctx              = llama_init_from_model(model, cp);

    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu             = false;
    mparams.print_timings       = false;
    mparams.n_threads           = a.threads;
    // select's per-head passes on as many threads as the encoder.
    const freepruner::executor parallel = freepruner::executor::threads(a.threads);
    mparams.flash_attn_type     = a.input == fp_mtmd::route::qk ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (prune) {
        mparams.cb_eval           = fp_mtmd::capture::callback;
        mparams.cb_eval_user_data = &cap;
    }
    mtmd::context_ptr mctx(mtmd_init_from_file(a.mmproj.c_str(), model, mparams));
    int rc = 1;
    report out;
    if (lctx == nullptr || !mctx) {
        std::fprintf(stderr, "llava_prune: cannot create the llama or mtmd context\n");
    } else if (mtmd_decode_use_mrope(mctx.get())) {
        std::fprintf(stderr, "llava_prune: M-RoPE models need 2-D positions for the kept tokens; not covered here\n");
    } else {
        rc = 0;
    }
    mtmd::bitmap bitmap;
    if (rc == 0) {
        bitmap.ptr.reset(mtmd_helper_bitmap_init_from_file(mctx.get(), a.image.c_str(), false,
                                                           mtmd_helper_init_opt_default()).bitmap);
        if (!bitmap.ptr) {
            std::fprintf(stderr, "llava_prune: cannot read the image %s\n", a.image.c_str());
            rc = 1;
        }
    }
    mtmd::input_chunks chunks(mtmd_input_chunks_init());
    if (rc == 0) {
        const mtmd_input_text text = { a.prompt.c_str(), a.prompt.size(), true, true };
        const mtmd_bitmap * bitmaps[1] = { bitmap.ptr.get() };
        if (mtmd_tokenize(mctx.get(), chunks.ptr.get(), &text, bitmaps, 1) != 0) {
            std::fprintf(stderr, "llava_prune: mtmd_tokenize failed (does the prompt hold one %s marker?)\n",
                         mtmd_default_marker());
            rc = 1;
        }
    }

    const int64_t n_embd  = llama_model_n_embd_inp(model);
    const int32_t n_batch = rc == 0 ? static_cast<int32_t>(llama_n_batch(lctx)) : 0;
    llama_memory_t mem    = rc == 0 ? llama_get_memory(lctx) : nullptr;
    llama_pos n_past      = 0;
    std::vector<float> image_embd;
    for (size_t c = 0; rc == 0 && c < chunks.size(); ++c) {
        const mtmd_input_chunk * chunk = chunks[c];
        const bool last = c + 1 == chunks.size();
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token * tokens = mtmd_input_chunk_get_tokens_text(chunk, &n);
            if (!decode(lctx, tokens, nullptr, static_cast<int64_t>(n), 0, n_past, n_batch, last)) {
                std::fprintf(stderr, "llava_prune: llama_decode failed on text\n");
                rc = 1;
            }
            n_past += static_cast<llama_pos>(n);
            continue;
        }
        if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            std::fprintf(stderr, "llava_prune: only text and image chunks are covered\n");
            rc = 1;
            break;
        }
        cap.begin();
        const auto t0 = std::chrono::steady_clock::now();
        if (mtmd_encode_chunk(mctx.get(), chunk) != 0) {
            std::fprintf(stderr, "llava_prune: mtmd_encode_chunk failed\n");
            rc = 1;
            break;
        }
        out.encode_ms     = ms_since(t0);
        out.rows          = static_cast<int64_t>(mtmd_input_chunk_get_n_tokens(chunk));
        const float * all = mtmd_get_output_embd(mctx.get());
        if (prune) {
            const auto t1 = std::chrono::steady_clock::now();
            if (!fp_mtmd::select(cap, budget, out.p, error, parallel)) {
                std::fprintf(stderr, "llava_prune: %s\n", error.c_str());
                rc = 1;
                break;
            }
            out.select_ms = ms_since(t1);
            if (expected && static_cast<freepruner::index_t>(out.p.kept.size()) != *expected) {
                std::fprintf(stderr, "llava_prune: select kept %zu tokens, kept_tokens said %lld\n", out.p.kept.size(),
                             static_cast<long long>(*expected));
                rc = 1;
                break;
            }
            fp_mtmd::gather(all, n_embd, out.p, image_embd);
        } else {
            image_embd.assign(all, all + out.rows * n_embd);
        }
        out.decoded = static_cast<int64_t>(image_embd.size()) / n_embd;
        const llama_pos before = llama_memory_seq_pos_max(mem, 0);
        const bool non_causal  = mtmd_decode_use_non_causal(mctx.get(), chunk);
        if (non_causal) {
            llama_set_causal_attn(lctx, false);
        }
        if (!decode(lctx, nullptr, image_embd.data(), out.decoded, n_embd, n_past, n_batch, last)) {
            std::fprintf(stderr, "llava_prune: llama_decode failed on the image embeddings\n");
            rc = 1;
        }
        if (non_causal) {
            llama_set_causal_attn(lctx, true);
        }
        out.kv_image = llama_memory_seq_pos_max(mem, 0) - before;
        n_past += static_cast<llama_pos>(out.decoded);
        if (rc == 0 && prune && a.repeat > 0) {
            bench(mctx.get(), chunk, cap, budget, parallel, a.repeat, out);
        }
    }
    out.prompt_positions = rc == 0 ? llama_memory_seq_pos_max(mem, 0) + 1 : 0;

    // Greedy generation from the prompt's last logits.
    if (rc == 0) {
        const llama_vocab * vocab = llama_model_get_vocab(model);
        llama_sampler * smpl      = llama_sampler_init_greedy();
        for (int i = 0; i < a.n_predict; ++i) {
            llama_token tok = llama_sampler_sample(smpl, lctx, -1);
            if (llama_vocab_is_eog(vocab, tok)) {
                break;
            }
            char piece[256];
            const int n = llama_token_to_piece(vocab, tok, piece, sizeof piece, 0, true);
            if (n > 0) {
                out.text.append(piece, static_cast<size_t>(n));
            }
            ++out.generated;
            out.generated_tokens.push_back(tok);
            if (!decode(lctx, &tok, nullptr, 1, 0, n_past++, n_batch, true)) {
                std::fprintf(stderr, "llava_prune: llama_decode failed while generating\n");
                rc = 1;
                break;
            }
        }
        llama_sampler_free(smpl);
    }

    if (rc == 0) {
        const char * route = a.input == fp_mtmd::route::qk ? "qk" : "maps";
        if (prune) {
            std::printf("freepruner: kept %lld of %lld image rows (%s route, blocks %d..%d, budget %s)\n",
                        static_cast<long long>(out.decoded), static_cast<long long>(out.rows), route,
                        vision.capture.front(), vision.capture.back(), a.budget.c_str());
            std::printf("time: image encode %.2f ms, select %.3f ms (%.2f %% of the encode)\n", out.encode_ms,
                        out.select_ms, 100.0 * out.select_ms / out.encode_ms);
        } else {
            std::printf("freepruner: off, %lld image rows; image encode %.2f ms\n", static_cast<long long>(out.rows),
                        out.encode_ms);
        }
        if (out.bench_plain_ms > 0) {
            std::printf("bench (%d encodes each, medians): encode %.1f ms, with the capture %.1f ms (%+.2f %%), "
                        "select %.2f ms (%.2f %% of the encode)\n",
                        a.repeat, out.bench_plain_ms, out.bench_capture_ms,
                        100.0 * (out.bench_capture_ms - out.bench_plain_ms) / out.bench_plain_ms, out.bench_select_ms,
                        100.0 * out.bench_select_ms / out.bench_plain_ms);
        } else if (a.repeat > 0) {
            std::fprintf(stderr, "llava_prune: --repeat: an encode or select failed\n");
            rc = 1;
        }
        std::printf("prompt: %lld positions; generated %lld tokens: %s\n",
                    static_cast<long long>(out.prompt_positions), static_cast<long long>(out.generated),
                    out.text.c_str());
    }
    if (rc == 0 && !a.dump.empty()) {
        const std::string d = a.dump + "/";
        bool ok = write_npy(d + "embd.npy", image_embd.data(), "<f4", 4, { out.decoded, n_embd });
        if (prune) {
            ok = ok && write_npy(d + "kept.npy", out.p.kept.indices.data(), "<i4", 4,
                                 { static_cast<int64_t>(out.p.kept.indices.size()) });
            ok = ok && write_npy(d + "rows.npy", out.p.out_rows.data(), "<i4", 4,
                                 { static_cast<int64_t>(out.p.out_rows.size()) });
            const int64_t n = vision.tokens, h = vision.heads;
            for (size_t s = 0; s < vision.capture.size(); ++s) {
                const std::string il = std::to_string(vision.capture[s]);
                if (a.input == fp_mtmd::route::qk) {
                    ok = ok && write_npy(d + "q-" + il + ".npy", cap.q[s].data(), "<f4", 4, { n, h, cap.d_head });
                    ok = ok && write_npy(d + "k-" + il + ".npy", cap.k[s].data(), "<f4", 4, { n, h, cap.d_head });
                } else {
                    ok = ok && write_npy(d + "maps-" + il + ".npy", cap.maps.data() + s * static_cast<size_t>(h * n * n),
                                         "<f4", 4, { h, n, n });
                }
            }
        }
        if (!ok) {
            std::fprintf(stderr, "llava_prune: cannot write the dump files in %s\n", a.dump.c_str());
            rc = 1;
        }
    }
    if (rc == 0 && !a.json.empty()) {
        std::string j = "{\"route\":\"" + std::string(a.input == fp_mtmd::route::qk ? "qk" : "maps") + "\"";
        j += ",\"budget\":" + json_string(a.budget) + ",\"tokens\":" + std::to_string(vision.tokens);
        j += ",\"heads\":" + std::to_string(vision.heads) + ",\"blocks\":" + std::to_string(vision.blocks);
        j += ",\"layers\":" + json_list(vision.capture);
        j += ",\"prefix\":" + std::to_string(out.p.options.prefix_tokens);
        j += ",\"suffix\":" + std::to_string(out.p.options.suffix_tokens);
        j += ",\"candidates\":" + std::to_string(out.p.candidates);
        j += ",\"image_rows\":" + std::to_string(out.rows) + ",\"decoded\":" + std::to_string(out.decoded);
        j += ",\"kv_image\":" + std::to_string(out.kv_image);
        j += ",\"prompt_positions\":" + std::to_string(out.prompt_positions);
        j += ",\"generated\":" + json_list(out.generated_tokens);
        j += ",\"encode_ms\":" + std::to_string(out.encode_ms) + ",\"select_ms\":" + std::to_string(out.select_ms);
        j += ",\"threads\":" + std::to_string(a.threads) + ",\"repeat\":" + std::to_string(a.repeat);
        j += ",\"bench_encode_ms\":" + std::to_string(out.bench_plain_ms);
        j += ",\"bench_capture_ms\":" + std::to_string(out.bench_capture_ms);
        j += ",\"bench_select_ms\":" + std::to_string(out.bench_select_ms);
        j += ",\"kept\":" + json_list(out.p.kept.indices) + ",\"pivotal\":" + json_list(out.p.kept.pivotal);
        j += ",\"rows\":" + json_list(out.p.out_rows) + "}\n";
        FILE * f = std::fopen(a.json.c_str(), "w");
        const bool ok = f != nullptr && std::fputs(j.c_str(), f) >= 0;
        if (f == nullptr || std::fclose(f) != 0 || !ok) {
            std::fprintf(stderr, "llava_prune: cannot write %s\n", a.json.c_str());
            rc = 1;
        }
    }
    mctx.reset();
    if (lctx != nullptr) {
        llama_free(lctx);
    }
    llama_model_free(model);
    return rc;
}

void quiet_log(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const args a = parse(argc, argv);
    if (!a.verbose) {
        llama_log_set(quiet_log, nullptr);
        mtmd_helper_log_set(quiet_log, nullptr);
    }
    llama_backend_init();
    const int rc = run(a);
    llama_backend_free();
    return rc;
}
