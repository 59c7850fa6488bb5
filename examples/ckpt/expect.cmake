# cmake -DCMD=exe;arg;... -DEXIT=n -DREGEX=re -P expect.cmake: runs CMD and requires both its
# exit code and a match of REGEX in its stdout+stderr (ctest's PASS_REGULAR_EXPRESSION alone
# ignores the exit code, and graft-ckpt's exit codes are part of its interface).
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT rc STREQUAL "${EXIT}")
  message(FATAL_ERROR "exit code ${rc}, expected ${EXIT}")
endif()
if(NOT out MATCHES "${REGEX}")
  message(FATAL_ERROR "output does not match: ${REGEX}")
endif()
