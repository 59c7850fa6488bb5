// expect: satisfaction of .*decides_without_a_live_module<S>.*satisfaction of .*entry_selector<S>.*checkpoint entries have no modules
// Checkpoint entries have names and tensors but no modules: a selector that needs a live module
// (of_type<...>, is_buffer, owner predicates) must not be accepted where entries are selected.
#include <graft/select.hpp>

using namespace graft::literals;

// Stands for every consumer of checkpoint keys (filters, renames of a state-dict pipeline).
template <graft::entry_selector S>
int on_keys(const S& s) {
  return s.matches(graft::entry_view("layer4.0.bn1.weight")) ? 1 : 0;
}

int main() {
#ifdef GRAFT_COMPILE_FAIL
  return on_keys("layer4.**"_glob & graft::of_type<torch::nn::BatchNorm2dImpl>);
#else
  return on_keys("layer4.**"_glob & !graft::bias);
#endif
}
