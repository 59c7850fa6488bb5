#pragma once
// How graft's heavy non-template code is compiled.
//
// Header-only (the default): every function is defined in the headers, `inline`, and compiled
// in each translation unit that uses it.
//
// Separately compiled (GRAFT_SEPARATE_COMPILATION defined for every unit of the program): the
// checkpoint readers and writers, read()/save() and merge are only declared by the headers a
// user includes; their definitions (the *-inl.hpp headers, with the unpickler, the zip and
// JSON readers beneath them) are compiled once, in the one translation unit that includes
// <graft/impl/src.hpp>. CMake's graft::compiled target is that unit as a static library, and
// defines the macro for whoever links it.

/// Marks a function defined in a *-inl.hpp header: inline when header-only, an ordinary
/// function compiled once in the separately compiled mode.
#ifdef GRAFT_SEPARATE_COMPILATION
#define GRAFT_FUNC
#else
#define GRAFT_FUNC inline
#endif
