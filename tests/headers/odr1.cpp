#include <graft/graft.hpp>
int odr_second();
int main() { return odr_second() == 2 ? 0 : 1; }
