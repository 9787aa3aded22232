#!/usr/bin/env bash
# The CUDA backend on a machine with a GPU, from the repository root:
#
#   bash bench/gpu/run.sh [steps...]          (default: every step, in this order)
#
#   build     configure bench/gpu (CUDA tests, benchmarks, PyTorch bridge) into build-gpu/ and build it
#   test      the CUDA backend against the CPU backend, and the API from a plain C++ TU
#   sanitize  compute-sanitizer memcheck, racecheck, initcheck and synccheck on the CUDA tests (--quick);
#             each tool is also a step of its own: memcheck racecheck initcheck synccheck
#   bench     freepruner_gpu_table (time per image, read bandwidth against a device-to-device
#             copy of the same run), then the Google Benchmark binary when it was built
#   torch     bench/gpu/torch_compare.py: speed-up over PyTorch on the same maps and GPU, same
#             tokens; prints the final table (joined with the bench step's CSV)
#
# Needs nvcc, cmake >= 3.18 and Eigen 3.3+. What the machine lacks can travel in .deps/
# (ignored by git), made on a machine that has it (docs/cuda.md, "On a GPU machine"):
#   .deps/eigen/usr/{include/eigen3,share/eigen3/cmake}   Eigen (needed)
#   .deps/benchmark/usr/...                               Google Benchmark (optional)
# Environment: BUILD (build-gpu), JOBS (nproc), CUDA_ARCH (90: H100, H200); OUT, when set to a
# folder, receives run.log and gpu_table.csv.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH=${CUDA_ARCH:-90}
export PATH="/usr/local/cuda/bin:$PATH"
steps=()
for step in "${@:-build test sanitize bench torch}"; do
  for word in $step; do
    if [ "$word" = sanitize ]; then steps+=(memcheck racecheck initcheck synccheck); else steps+=("$word"); fi
  done
done

# On the lent GPU machines, $OUT is a folder that comes back: keep the log and the tables there.
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  exec > >(tee -a "$OUT/run.log") 2>&1
fi

failures=()
note() { printf '\n== %s\n' "$*"; }
failed() { echo "FAILED: $*"; failures+=("$*"); }

conformance=""
for dir in tests/data/conformance; do
  if [ -f "$dir/cases.txt" ]; then conformance=$(realpath "$dir"); break; fi
done

sanitizer=$(command -v compute-sanitizer || true)
for candidate in /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda/bin/compute-sanitizer; do
  [ -z "$sanitizer" ] && [ -x "$candidate" ] && sanitizer=$candidate
done

for step in "${steps[@]}"; do
  case $step in
    build)
      note "GPU and toolchain"
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not found"
      nvcc --version | tail -n 2
      cmake --version | head -n 1
      args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH")
      if ! printf '#include <Eigen/Core>\n' | c++ -x c++ -fsyntax-only -I/usr/include/eigen3 - 2>/dev/null; then
        config=$(find .deps/eigen -name Eigen3Config.cmake 2>/dev/null | head -n 1)
        if [ -n "$config" ]; then
          args+=("-DEigen3_DIR=$(realpath "$(dirname "$config")")")
        else
          echo "Eigen not found: install libeigen3-dev, or carry it in .deps/eigen (docs/cuda.md)"
        fi
      fi
      config=$(find .deps/benchmark -name benchmarkConfig.cmake 2>/dev/null | head -n 1)
      [ -n "$config" ] && args+=("-Dbenchmark_DIR=$(realpath "$(dirname "$config")")")
      if [ -n "$conformance" ]; then
        args+=("-DFREEPRUNER_CONFORMANCE_DIR=$conformance")
      else
        echo "no conformance vectors (tests/data/conformance): the tests skip that part"
      fi
      note "configure and build ($BUILD, $JOBS jobs)"
      if ! { cmake -S bench/gpu -B "$BUILD" "${args[@]}" && cmake --build "$BUILD" -j "$JOBS"; }; then
        failed build
        break
      fi
      ;;
    test)
      # The binaries themselves, not ctest: here a skip (exit 77, no device) is a failure.
      note "CUDA tests: the backend against the CPU backend"
      "$BUILD/tests/freepruner_cuda_tests" "${conformance:-none}"
      code=$?
      [ $code -eq 0 ] || failed "freepruner_cuda_tests (exit $code$([ $code -eq 77 ] && echo ': no CUDA device'))"
      note "CUDA tests: the API from a plain C++ translation unit"
      "$BUILD/tests/freepruner_cuda_from_cxx"
      code=$?
      [ $code -eq 0 ] || failed "freepruner_cuda_from_cxx (exit $code$([ $code -eq 77 ] && echo ': no CUDA device'))"
      ;;
    memcheck | racecheck | initcheck | synccheck)
      note "compute-sanitizer --tool $step"
      if [ -z "$sanitizer" ]; then
        failed "compute-sanitizer not found (it ships with the CUDA toolkit)"
        continue
      fi
      extra=()
      [ "$step" = memcheck ] && extra=(--leak-check full)
      "$sanitizer" --tool "$step" "${extra[@]}" --error-exitcode 99 \
        "$BUILD/tests/freepruner_cuda_tests" "${conformance:-none}" --quick || failed "compute-sanitizer $step"
      ;;
    bench)
      note "throughput table"
      "$BUILD/freepruner_gpu_table" --csv "$BUILD/gpu_table.csv" || failed "freepruner_gpu_table"
      [ -n "${OUT:-}" ] && [ -f "$BUILD/gpu_table.csv" ] && cp "$BUILD/gpu_table.csv" "$OUT/"
      if [ -x "$BUILD/freepruner_gpu_bench" ]; then
        note "Google Benchmark"
        "$BUILD/freepruner_gpu_bench" --benchmark_counters_tabular=true || failed "freepruner_gpu_bench"
      fi
      ;;
    torch)
      note "PyTorch on the same GPU and maps"
      if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        python3 bench/gpu/torch_compare.py "$BUILD/libfreepruner_gpu_capi.so" --table "$BUILD/gpu_table.csv" ||
          failed "torch_compare"
      else
        failed "PyTorch with CUDA not found (python3 -c 'import torch')"
      fi
      ;;
    *)
      echo "unknown step '$step' (build test sanitize memcheck racecheck initcheck synccheck bench torch)"
      exit 2
      ;;
  esac
done

echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "run.sh: all steps passed (${steps[*]})"
else
  printf 'run.sh: FAILED: %s\n' "${failures[@]}"
  exit 1
fi
