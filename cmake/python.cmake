# The Python that runs the project's Python checks (the tool's numpy and
# Hugging Face tests, the llama.cpp tests): FREEPRUNER_PYTHON
# (a cache variable, or the environment variable at the first configure),
# else the first of python3 on PATH and /usr/bin/python3 that imports the
# most of numpy, torch and transformers. A missing module skips the test.
set(doc "Python for the Python checks (empty: look for one that imports numpy, torch and transformers)")
set(FREEPRUNER_PYTHON "$ENV{FREEPRUNER_PYTHON}" CACHE FILEPATH "${doc}")
if(NOT FREEPRUNER_PYTHON)
  find_program(FREEPRUNER_PYTHON_ON_PATH NAMES python3)
  set(best_score -1)
  foreach(candidate IN ITEMS "${FREEPRUNER_PYTHON_ON_PATH}" /usr/bin/python3)
    if(candidate AND EXISTS "${candidate}")
      execute_process(COMMAND "${candidate}" -c
        "s = 0\ntry:\n import numpy; s = 1\n import torch; s = 2\n import transformers; s = 3\nexcept Exception: pass\nprint(s)"
        OUTPUT_VARIABLE score OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed TIMEOUT 120)
      if(NOT failed AND score GREATER best_score)
        set(best_score ${score})
        set(FREEPRUNER_PYTHON "${candidate}" CACHE FILEPATH "${doc}" FORCE)
      endif()
    endif()
  endforeach()
endif()
