# clang (16 and 19 alike) cannot compile libtorch 1.13's headers in C++20 against libstdc++ 12:
# std::vector's members are constexpr there, clang instantiates them where ATen/core/List.h
# first uses std::vector<c10::IValue>, and IValue is still incomplete at that point. GCC
# instantiates later and is unaffected.
#
# graft_torch_clang_shim(OUT_DIR) writes copies of List.h and ivalue.h to OUT_DIR/ATen/core in
# which ListImpl's constructor and copy() and impl::ptr_to_first_element are only declared, and
# defines them, unchanged, at the end of ivalue.h, after IValue is complete. Put OUT_DIR first on
# the include path of clang-built targets only. It is regenerated from the installed headers and
# stops with an error if they no longer contain the code it moves.
function(graft_torch_clang_shim out_dir)
  find_path(_graft_aten_core ATen/core/List.h HINTS ${TORCH_INCLUDE_DIRS} REQUIRED)
  set(core "${_graft_aten_core}/ATen/core")
  file(READ "${core}/List.h" list_h)
  file(READ "${core}/ivalue.h" ivalue_h)

  # Each pair: the code as List.h has it, then what the shim leaves in its place.
  set(from1 "  explicit ListImpl(list_type list_, TypePtr elementType_)\n  : list(std::move(list_))\n  , elementType(std::move(elementType_)) {}")
  set(to1 "  explicit ListImpl(list_type list_, TypePtr elementType_);")
  set(from2 "  intrusive_ptr<ListImpl> copy() const {\n    return make_intrusive<ListImpl>(list, elementType);\n  }")
  set(to2 "  intrusive_ptr<ListImpl> copy() const;")
  set(from3 "inline const IValue* ptr_to_first_element(const GenericList& list) {\n  return &list.impl_->list[0];\n}")
  set(to3 "inline const IValue* ptr_to_first_element(const GenericList& list);")
  foreach(i 1 2 3)
    string(FIND "${list_h}" "${from${i}}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${core}/List.h does not hold the code the clang shim moves:\n${from${i}}")
    endif()
    string(REPLACE "${from${i}}" "${to${i}}" list_h "${list_h}")
  endforeach()

  set(tail "#include <ATen/core/ivalue_inl.h>  // IWYU pragma: keep")
  string(FIND "${ivalue_h}" "${tail}" at REVERSE)
  if(at EQUAL -1)
    message(FATAL_ERROR "${core}/ivalue.h does not end by including ivalue_inl.h as the clang shim expects")
  endif()
  string(SUBSTRING "${ivalue_h}" 0 ${at} head)
  set(defs [[
// Moved here from ATen/core/List.h by graft's clang shim (tests/fuzz/clang_torch_shim.cmake).
namespace c10 {
namespace detail {
inline ListImpl::ListImpl(list_type list_, TypePtr elementType_)
  : list(std::move(list_)), elementType(std::move(elementType_)) {}
inline intrusive_ptr<ListImpl> ListImpl::copy() const {
  return make_intrusive<ListImpl>(list, elementType);
}
} // namespace detail
namespace impl {
inline const IValue* ptr_to_first_element(const GenericList& list) {
  return &list.impl_->list[0];
}
} // namespace impl
} // namespace c10

]])
  # Rewritten only when the content changes, so reconfiguring does not rebuild everything.
  file(WRITE "${out_dir}/List.h.new" "${list_h}")
  file(WRITE "${out_dir}/ivalue.h.new" "${head}${defs}${tail}\n")
  file(MAKE_DIRECTORY "${out_dir}/ATen/core")
  foreach(h List.h ivalue.h)
    file(COPY_FILE "${out_dir}/${h}.new" "${out_dir}/ATen/core/${h}" ONLY_IF_DIFFERENT)
    file(REMOVE "${out_dir}/${h}.new")
  endforeach()
endfunction()
