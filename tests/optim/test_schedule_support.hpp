#pragma once
// Shared by the schedule tests: optimizers with one parameter per group, a Python prelude that
// prints PyTorch's lrs epoch by epoch, and a parser and comparison for those traces.

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <graft/optim/schedules.hpp>

#include "oracle.hpp"

namespace graft::test {

/// Which libtorch optimizer a case uses; Python builds the same one.
enum class opt_kind { sgd, sgd_plain, adam, adamw, rmsprop, adagrad };

/// An optimizer with one single-element parameter per group, group i at lrs[i].
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(opt_kind kind, const std::vector<double>& lrs) {
  using namespace torch::optim;
  std::vector<OptimizerParamGroup> groups;
  auto options = [&](double lr) -> std::unique_ptr<OptimizerOptions> {
    switch (kind) {
      case opt_kind::sgd: return std::make_unique<SGDOptions>(SGDOptions(lr).momentum(0.9));
      case opt_kind::sgd_plain: return std::make_unique<SGDOptions>(lr);
      case opt_kind::adam: return std::make_unique<AdamOptions>(lr);
      case opt_kind::adamw: return std::make_unique<AdamWOptions>(lr);
      case opt_kind::rmsprop: return std::make_unique<RMSpropOptions>(lr);
      case opt_kind::adagrad: return std::make_unique<AdagradOptions>(lr);
    }
    return nullptr;
  };
  for (double lr : lrs)
    groups.emplace_back(std::vector<torch::Tensor>{torch::zeros({1}, torch::requires_grad())}, options(lr));
  double lr0 = lrs.empty() ? 0.1 : lrs[0];
  // Each group keeps the options it was made with: libtorch 2.x's constructor would replace an
  // option equal to its class's default (Adam's lr 1e-3) with the optimizer's default.
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> given;
  for (auto& g : groups) given.push_back(g.options().clone());
  auto keep = [&](std::unique_ptr<torch::optim::Optimizer> opt) {
    for (std::size_t i = 0; i < given.size(); ++i) opt->param_groups()[i].set_options(std::move(given[i]));
    return opt;
  };
  switch (kind) {
    case opt_kind::sgd: return keep(std::make_unique<SGD>(std::move(groups), SGDOptions(lr0).momentum(0.9)));
    case opt_kind::sgd_plain: return keep(std::make_unique<SGD>(std::move(groups), SGDOptions(lr0)));
    case opt_kind::adam: return keep(std::make_unique<Adam>(std::move(groups), AdamOptions(lr0)));
    case opt_kind::adamw: return keep(std::make_unique<AdamW>(std::move(groups), AdamWOptions(lr0)));
    case opt_kind::rmsprop: return keep(std::make_unique<RMSprop>(std::move(groups), RMSpropOptions(lr0)));
    case opt_kind::adagrad: return keep(std::make_unique<Adagrad>(std::move(groups), AdagradOptions(lr0)));
  }
  return nullptr;
}

/// Python's name for an optimizer kind, as make_opt() in python_prelude understands it.
inline std::string python_kind(opt_kind kind) {
  switch (kind) {
    case opt_kind::sgd: return "sgd";
    case opt_kind::sgd_plain: return "sgd_plain";
    case opt_kind::adam: return "adam";
    case opt_kind::adamw: return "adamw";
    case opt_kind::rmsprop: return "rmsprop";
    case opt_kind::adagrad: return "adagrad";
  }
  return "";
}

/// Python helpers: run(tag, lrs, make, n, kind) prints "lr <tag> <epoch> <lr per group>" and
/// "mom <tag> <epoch> <momentum per group>" for epochs 0..n-1, stepping the scheduler between.
inline const char* python_prelude = R"(
import math, warnings, torch
warnings.filterwarnings("ignore")
from torch.optim import lr_scheduler as L

def make_opt(lrs, kind):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return {"sgd": lambda: torch.optim.SGD(groups, lr=lrs[0], momentum=0.9),
            "sgd_plain": lambda: torch.optim.SGD(groups, lr=lrs[0]),
            "adam": lambda: torch.optim.Adam(groups, lr=lrs[0]),
            "adamw": lambda: torch.optim.AdamW(groups, lr=lrs[0]),
            "rmsprop": lambda: torch.optim.RMSprop(groups, lr=lrs[0]),
            "adagrad": lambda: torch.optim.Adagrad(groups, lr=lrs[0])}[kind]()

def momentum_of(g):
    return g["betas"][0] if "betas" in g else g.get("momentum")

def run(tag, lrs, make, n, kind="sgd"):
    o = make_opt(lrs, kind)
    s = make(o)
    for e in range(n):
        print("lr", tag, e, *[repr(g["lr"]) for g in o.param_groups])
        if momentum_of(o.param_groups[0]) is not None:
            print("mom", tag, e, *[repr(momentum_of(g)) for g in o.param_groups])
        if e + 1 < n:
            s.step()
)";

/// Per tag, per epoch, per group values parsed from the oracle's output.
using traces = std::map<std::string, std::vector<std::vector<double>>>;

/// Parses the lines starting with `kind` ("lr" or "mom") out of the oracle's output.
inline traces parse_traces(const std::string& out, const std::string& kind) {
  traces result;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string k, tag;
    std::size_t epoch = 0;
    if (!(words >> k >> tag >> epoch) || k != kind) continue;
    auto& rows = result[tag];
    rows.resize(std::max(rows.size(), epoch + 1));
    for (std::string v; words >> v;) rows[epoch].push_back(std::stod(v));
  }
  return result;
}

/// Checks every epoch's every group value against PyTorch's, relative tolerance 1e-9.
inline void check_traces(const std::vector<std::vector<double>>& got,
                         const std::vector<std::vector<double>>& expected, const std::string& what) {
  INFO(what);
  REQUIRE(!expected.empty());
  REQUIRE(got.size() == expected.size());
  for (std::size_t e = 0; e < got.size(); ++e) {
    REQUIRE(got[e].size() == expected[e].size());
    for (std::size_t g = 0; g < got[e].size(); ++g) {
      INFO("epoch " << e << ", group " << g);
      CHECK(got[e][g] == Approx(expected[e][g]).epsilon(1e-9).margin(1e-18));
    }
  }
}

/// The lrs every group of `opt` holds now, read back from the optimizer itself.
inline std::vector<double> group_lrs(torch::optim::Optimizer& opt) {
  std::vector<double> lrs;
  for (auto& g : opt.param_groups()) lrs.push_back(g.options().get_lr());
  return lrs;
}

/// Each group's momentum (or beta1), empty if the optimizer has none.
inline std::vector<double> group_momenta(torch::optim::Optimizer& opt) {
  std::vector<double> m;
  for (auto& g : opt.param_groups())
    if (auto* slot = graft::detail::momentum_slot(g.options())) m.push_back(*slot);
  return m;
}

} // namespace graft::test
