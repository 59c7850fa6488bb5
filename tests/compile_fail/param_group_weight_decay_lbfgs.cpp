// expect: graft::opt::weight_decay: this optimizer has no 'weight_decay' option
// LBFGS has no weight decay: asking for one per group does not compile; for Adam it does.
#include <torch/torch.h>

#include <graft/optim/param_groups.hpp>

int main() {
  torch::nn::Linear net(4, 2);
#ifdef GRAFT_COMPILE_FAIL
  auto base = torch::optim::LBFGSOptions(1);
#else
  auto base = torch::optim::AdamOptions(1e-3);
#endif
  auto groups = graft::param_groups(*net).rest("all", {}, graft::opt::weight_decay{0.0}).build(base);
  return static_cast<int>(groups.size()) - 1;
}
