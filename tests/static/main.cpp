// The static checks live in this folder's other files; compiling them is the test.
#include <cstdio>
int main() {
  std::puts("static checks: every static_assert in tests/static compiled");
  return 0;
}
