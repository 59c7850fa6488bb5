// expect: glob_pattern_has_a_double_star_that_is_not_a_whole_segment
// glob("...") checks a literal in its consteval constructor: the failing call names the issue.
#include <graft/select.hpp>

int main() {
#ifdef GRAFT_COMPILE_FAIL
  graft::glob g("a**b");  // '**' glued to other characters
#else
  graft::glob g("a.**.b");
#endif
  return g.pattern().empty() ? 1 : 0;
}
