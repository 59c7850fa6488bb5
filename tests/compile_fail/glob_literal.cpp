// expect: invalid_glob_literal<graft::detail::glob_issue::unbalanced_brace, 5>.*static assertion failed: invalid _glob literal: '\{' is never closed
// A malformed _glob literal does not compile, and the error says what is wrong and where.
#include <graft/select.hpp>

using namespace graft::literals;

int main() {
#ifdef GRAFT_COMPILE_FAIL
  auto g = "layer{4.**"_glob;  // the '{' at position 5 is never closed
#else
  auto g = "layer{4}.**"_glob;
#endif
  return g.pattern().empty() ? 1 : 0;
}
