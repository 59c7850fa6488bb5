#pragma once
// The separately compiled mode's instances of walk.hpp's two walks (graft::compiled compiles
// them once; walk.hpp declares them extern). Header-only, each unit instantiates what it uses.

#include <graft/config.hpp>
#include <graft/walk/walk.hpp>

#ifdef GRAFT_SEPARATE_COMPILATION
template class graft::basic_walk<graft::detail::keep_every_module>;
template class graft::basic_walk<graft::detail::erased_prune>;
#endif
