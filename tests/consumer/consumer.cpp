// A user's program: takes graft from an installed package or from a source subdirectory.
#include <graft/graft.hpp>

#include <torch/torch.h>

using namespace graft::literals;

struct netImpl : torch::nn::Module {
  torch::nn::Linear body{register_module("body", torch::nn::Linear(4, 8))};
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(8, 2))};
};
TORCH_MODULE(net);

int main() {
  net n;
  auto all = graft::select(*n, "**"_glob).size();
  auto head = graft::select(*n, "fc.*"_glob).size();
  fmt::print("consumer: selected {} of {} tensors\n", head, all);
  return head == 2 && all == 4 ? 0 : 1;
}
