#include <graft/graft.hpp>
int odr_second() { return 2; }
