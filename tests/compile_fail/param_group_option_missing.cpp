// expect: graft::opt::momentum: this optimizer has no 'momentum' option \(only SGD and RMSprop have momentum\)
// A per-group momentum for Adam, which has none, does not compile; for SGD it does.
#include <torch/torch.h>

#include <graft/optim/param_groups.hpp>

int main() {
  torch::nn::Linear net(4, 2);
#ifdef GRAFT_COMPILE_FAIL
  auto base = torch::optim::AdamOptions(1e-3);
#else
  auto base = torch::optim::SGDOptions(1e-3);
#endif
  auto groups = graft::param_groups(*net).rest("all", {}, graft::opt::momentum{0.9}).build(base);
  return static_cast<int>(groups.size()) - 1;
}
