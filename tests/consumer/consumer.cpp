// A user's program: takes graft from an installed package or from a source subdirectory,
// header-only (graft::graft) or separately compiled (graft::compiled).
#include <graft/graft.hpp>

#include <torch/torch.h>

#include <filesystem>

#include <unistd.h>

using namespace graft::literals;

struct netImpl : torch::nn::Module {
  torch::nn::Linear body{register_module("body", torch::nn::Linear(4, 8))};
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(8, 2))};
};
TORCH_MODULE(net);

int main() {
  net n, m;
  auto all = graft::select(*n, "**"_glob).size();
  auto head = graft::select(*n, "fc.*"_glob).size();
  fmt::print("consumer: selected {} of {} tensors\n", head, all);

  // A checkpoint written and merged back: the readers, writers and merge are what
  // graft::compiled compiles once.
  auto file = (std::filesystem::temp_directory_path() / fmt::format("graft_consumer_{}.safetensors", ::getpid())).string();
  graft::save(graft::state_dict(*n), file);
  auto report = graft::read(file) | graft::filter("body.*"_glob) | graft::merge(*m, {.missing = graft::allow("fc.*"_glob)});
  std::filesystem::remove(file);
  bool same = torch::equal(m->body->weight, n->body->weight) && !torch::equal(m->fc->weight, n->fc->weight);
  fmt::print("consumer: merged {} tensors from {}\n", report.loaded.size(), file);
  return head == 2 && all == 4 && same && report.loaded.size() == 2 ? 0 : 1;
}
