# Warnings for the project's own targets; the public headers are also
# compiled with llama.cpp's flags and -Werror by tests/CMakeLists.txt.
set(FREEPRUNER_WARNING_FLAGS
  -Wall -Wextra -Wpedantic -Wmissing-declarations -Wmissing-noreturn -Wcast-qual -Wextra-semi -Wshadow)

function(freepruner_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE ${FREEPRUNER_WARNING_FLAGS})
    if(FREEPRUNER_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
