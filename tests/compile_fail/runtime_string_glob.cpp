// expect: use of deleted function .*graft::glob::glob\(const S&\) \[with S = std::__cxx11::basic_string<char>\].*must be marked: graft::glob\(graft::runtime\(s\)\)
// A std::string cannot be checked at compile time: it must be marked graft::runtime(s), which
// checks it when the glob is built and throws pattern_error.
#include <string>

#include <graft/select.hpp>

int main(int argc, char**) {
  std::string pattern = argc > 1 ? "fc.*" : "layer4.**";
#ifdef GRAFT_COMPILE_FAIL
  graft::glob g(pattern);
#else
  graft::glob g(graft::runtime(pattern));
#endif
  return g.pattern().empty() ? 1 : 0;
}
