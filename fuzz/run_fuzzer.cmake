# Runs the libFuzzer target for CTest (cmake -P):
#   MODE=replay: every file of CORPUS once;
#   MODE=fuzz:   fuzzes for SECONDS with libFuzzer -seed=SEED, starting from
#                CORPUS (read only) and a fresh scratch corpus in WORK,
#                inputs of at most MAX_LEN bytes (512 unless given).
# Fails on a crash, a failed check, a leak or a slow input, naming the input.
# libFuzzer's progress lines go to WORK/<MODE>.log; the summary is printed.
cmake_minimum_required(VERSION 3.16)
foreach(var FUZZER CORPUS WORK MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: ${var} is not set")
  endif()
endforeach()

set(ENV{FPFUZZ_STATS} 1)
set(common -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 "-artifact_prefix=${WORK}/artifacts/")
file(MAKE_DIRECTORY "${WORK}/artifacts")
set(log "${WORK}/${MODE}.log")

if(MODE STREQUAL "replay")
  file(GLOB seeds "${CORPUS}/*")
  list(LENGTH seeds count)
  if(count EQUAL 0)
    message(FATAL_ERROR "no seeds in ${CORPUS}")
  endif()
  execute_process(COMMAND "${FUZZER}" ${common} ${seeds} RESULT_VARIABLE rc OUTPUT_FILE "${log}" ERROR_FILE "${log}")
  set(what "replaying ${count} seeds")
elseif(MODE STREQUAL "fuzz")
  file(REMOVE_RECURSE "${WORK}/corpus-scratch")
  file(MAKE_DIRECTORY "${WORK}/corpus-scratch")
  if(NOT DEFINED MAX_LEN)
    set(MAX_LEN 512)
  endif()
  execute_process(COMMAND "${FUZZER}" ${common} -seed=${SEED} -max_total_time=${SECONDS} -max_len=${MAX_LEN}
                          "${WORK}/corpus-scratch" "${CORPUS}"
                  RESULT_VARIABLE rc OUTPUT_FILE "${log}" ERROR_FILE "${log}")
  set(what "fuzzing for ${SECONDS} s with -seed=${SEED}")
else()
  message(FATAL_ERROR "run_fuzzer.cmake: MODE must be replay or fuzz, not ${MODE}")
endif()

# The summary: the first and last status lines, the final stats, the oracle's counts.
file(STRINGS "${log}" summary REGEX "^#[0-9]+.(INITED|DONE)|^stat::|^freepruner fuzz:|^Done |^INFO: Seed|files found")
string(JOIN "\n" summary ${summary})
message("${summary}")

if(NOT rc EQUAL 0)
  file(READ "${log}" text)  # the crash report is at the end
  string(LENGTH "${text}" n)
  if(n GREATER 12000)
    math(EXPR from "${n} - 12000")
    string(SUBSTRING "${text}" ${from} -1 text)
  endif()
  message("...\n${text}")
  message(FATAL_ERROR "freepruner fuzz: ${what} failed (exit ${rc}); full log ${log}. The input is in ${WORK}/artifacts/; "
                      "replay it with: ${FUZZER} <file>, and add it to fuzz/corpus/ once fixed.")
endif()
