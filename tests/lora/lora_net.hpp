#pragma once
// The model the LoRA tests share: an Embedding, a strided 3x3 and a 1x1 Conv2d, BatchNorm, two
// Linear layers; and the same model in Python, for the oracles.

#include <string>
#include <utility>

#include <torch/torch.h>

#include <graft/graft.hpp>

#include "oracle.hpp"

namespace graft::test {

// The model, with libtorch's layer types or with graft's own (graft/lora/layers.hpp): the
// same modules, registration order, initialization and state dict.
template <class Embedding, class Conv2d, class Linear>
struct basic_lora_net : torch::nn::Module {
  Embedding emb{nullptr};
  Conv2d conv3{nullptr}, conv1{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  Linear lin1{nullptr}, fc{nullptr};
  basic_lora_net() {
    emb = register_module("emb", Embedding(10, 8));
    conv3 = register_module("conv3", Conv2d(torch::nn::Conv2dOptions(3, 6, 3).stride(2).padding(1)));
    conv1 = register_module("conv1", Conv2d(6, 4, 1));
    bn = register_module("bn", torch::nn::BatchNorm2d(4));
    lin1 = register_module("lin1", Linear(8, 16));
    fc = register_module("fc", Linear(20, 5));
    torch::NoGradGuard no_grad;
    bn->running_mean.normal_(0, 0.5);
    bn->running_var.uniform_(0.5, 2.0);
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.normal_(0, 0.1);
  }
  torch::Tensor forward(const torch::Tensor& img, const torch::Tensor& tok) {
    auto x = bn(conv1(torch::relu(conv3(img)))).mean({2, 3});
    auto h = torch::relu(lin1(emb(tok).mean(1)));
    return fc(torch::cat({h, x}, 1));
  }
};
struct LoraNetImpl : basic_lora_net<torch::nn::Embedding, torch::nn::Conv2d, torch::nn::Linear> {};
TORCH_MODULE(LoraNet);
struct OwnLoraNetImpl : basic_lora_net<graft::lora::Embedding, graft::lora::Conv2d, graft::lora::Linear> {};
TORCH_MODULE(OwnLoraNet);

inline const std::string lora_net_python = R"(
import json, math, sys
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv3 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv1 = nn.Conv2d(6, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.lin1 = nn.Linear(8, 16)
        self.fc = nn.Linear(20, 5)
    def forward(self, img, tok):
        x = self.bn(self.conv1(torch.relu(self.conv3(img)))).mean((2, 3))
        h = torch.relu(self.lin1(self.emb(tok).mean(1)))
        return self.fc(torch.cat([h, x], 1))

def base_net(d):
    m = Net()
    m.load_state_dict(load_file(d + '/base.safetensors'))
    return m.eval()

def inputs(d):
    i = load_file(d + '/inputs.safetensors')
    return i['img'], i['tok']
)";

/// A model with the base weights written to dir/base.safetensors, and inputs in
/// dir/inputs.safetensors.
struct lora_fixture {
  scratch_dir dir;
  LoraNet net;
  torch::Tensor img, tok;
  lora_fixture() {
    torch::manual_seed(7);
    net->eval();
    img = torch::randn({4, 3, 8, 8});
    tok = torch::randint(0, 10, {4, 5}, torch::kLong);
    graft::save(graft::state_dict(*net), dir.file("base.safetensors"));
    graft::write_safetensors(dir.file("inputs.safetensors"), {{"img", img}, {"tok", tok}});
  }
  std::string path() const { return dir.path().string(); }
  /// A fresh model holding the base weights (Net: LoraNet or OwnLoraNet).
  template <class Net = LoraNet>
  Net fresh() const {
    Net m;
    graft::merge(*m, graft::read(dir.file("base.safetensors")).load());
    m->eval();
    return m;
  }
  template <class Net>
  torch::Tensor run(Net& m) const {
    torch::NoGradGuard no_grad;
    return m->forward(img, tok);
  }
};

/// Max |a - b|.
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

/// graft's folder in PEFT: saves `ad` to dir/graft, merges and unloads it and saves the merged
/// model, then has PEFT (the peft package of `python`) load the folder onto the Python model
/// (running `check` on it, `pm`, first). Returns PEFT's outputs on the fixture's inputs and the
/// largest difference between PEFT's merged weights and graft's (the keys must be the same).
inline std::pair<torch::Tensor, double> peft_reads(const lora_fixture& fx, graft::lora::adapters& ad, const torch::nn::Module& net,
                                                   const std::string& python, const std::string& check = "") {
  graft::lora::save(ad, fx.dir.file("graft"));
  ad.merge_and_unload();
  graft::save(graft::state_dict(net), fx.dir.file("graft_merged.safetensors"));
  auto out = run_python_with(python, lora_net_python + fmt::format(R"(
from peft import PeftModel
d = '{}'
pm = PeftModel.from_pretrained(base_net(d), d + '/graft').eval()
{}
img, tok = inputs(d)
with torch.no_grad():
    y = pm(img, tok)
    merged = pm.merge_and_unload().state_dict()
mine = load_file(d + '/graft_merged.safetensors')
assert sorted(merged) == sorted(mine), (list(merged), list(mine))
save_file({{'y': y}}, d + '/peft_out.safetensors')
print('merged_diff', max((merged[k] - mine[k]).abs().max().item() for k in mine))
)",
                                                                  fx.path(), check));
  double merged_diff = 1;
  if (auto at = out.find("merged_diff "); at != std::string::npos) merged_diff = std::stod(out.substr(at + 12));
  return {read(fx.dir.file("peft_out.safetensors")).load().at("y"), merged_diff};
}

/// The state of a model as plain copies, to tell whether anything changed.
/// (The requires_grad flags and the module paths are part of it: attach() changes them first.)
inline std::vector<std::pair<std::string, torch::Tensor>> snapshot(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> s;
  for (auto& e : graft::state_dict(m))
    s.emplace_back(e.key + (e.tensor.requires_grad() ? " (trainable)" : ""), e.tensor.detach().clone());
  for (const auto& item : m.named_modules()) s.emplace_back("module " + item.key(), torch::Tensor());
  return s;
}
inline bool same_state(const std::vector<std::pair<std::string, torch::Tensor>>& a, const torch::nn::Module& m) {
  auto b = snapshot(m);
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].first != b[i].first || a[i].second.defined() != b[i].second.defined() ||
        (a[i].second.defined() && !torch::equal(a[i].second, b[i].second)))
      return false;
  return true;
}

} // namespace graft::test
