// expect: graft::opt::custom\(f\): f must accept the options type given to build\(\)
// A custom setting written for SGD's options cannot be applied to Adam's.
#include <torch/torch.h>

#include <graft/optim/param_groups.hpp>

int main() {
  torch::nn::Linear net(4, 2);
#ifdef GRAFT_COMPILE_FAIL
  auto base = torch::optim::AdamOptions(1e-3);
#else
  auto base = torch::optim::SGDOptions(1e-3);
#endif
  auto groups = graft::param_groups(*net)
                    .rest("all", {}, graft::opt::custom([](torch::optim::SGDOptions& o) { o.nesterov(true).momentum(0.9); }))
                    .build(base);
  return static_cast<int>(groups.size()) - 1;
}
