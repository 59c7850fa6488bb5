#pragma once
// The definitions of combine/combine.hpp.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/combine/combine.hpp>
#include <graft/detail/merge_kernels.hpp>
#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/state_dict/merge.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft {

namespace detail::combine {

// The per-tensor formulas, in mergekit's arithmetic. Inputs arrive in the compute dtype
// (float64 for float64 tensors, float32 otherwise).

inline torch::Tensor linear(const std::vector<torch::Tensor>& xs, const std::vector<double>& w, bool normalize) {
  double sum = 0;
  for (double v : w) sum += v;
  // In blocks that stay in the cache: each input is read once and the result written once,
  // instead of one pass over the whole result per input. mergekit starts from zeros; 0 + w·x is
  // w·x exactly, so the first term spares that pass.
  auto result = torch::empty_like(xs[0], torch::MemoryFormat::Contiguous);
  auto r = result.view({-1});
  std::vector<torch::Tensor> flat;
  for (const auto& x : xs) flat.push_back(x.reshape({-1}));
  constexpr std::int64_t block = 1 << 15;
  for (std::int64_t a = 0, n = r.numel(); a < n; a += block) {
    const auto b = std::min(n, a + block);
    auto rb = r.slice(0, a, b);
    rb.copy_(flat[0].slice(0, a, b)).mul_(w[0]);
    for (std::size_t i = 1; i < flat.size(); ++i) rb.add_(flat[i].slice(0, a, b), w[i]);
    if (normalize && sum != 1) rb.div_(sum);
  }
  return result;
}

inline torch::Tensor masked_rescaled(const torch::Tensor& delta, const torch::Tensor& mask, dare_rescale r, double density) {
  auto masked = delta * mask;
  if (r == dare_rescale::none) return masked;
  if (r == dare_rescale::inverse_density) return masked.div_(density);
  const double before = delta.abs().sum().item<double>();
  const double after = masked.abs().sum().item<double>();
  if (before < 1e-7 || after < 1e-7) return masked;
  return masked.mul_(before / after);
}

namespace mk = graft::detail::merge_kernels;

inline torch::Tensor drop_random(const torch::Tensor& delta, double density, dare_rescale r, std::uint64_t seed) {
  if (density >= 1) return delta;
  return masked_rescaled(delta, mk::keep_mask(delta, density, seed), r, density);
}

struct task_settings {
  bool trim = false, drop = false, elect = false, normalize = false;
  double density = 1, lambda = 1;
  dare_rescale rescale = dare_rescale::l1;
  std::uint64_t seed = 0;
};

inline torch::Tensor task_vectors(const torch::Tensor& base, const std::vector<torch::Tensor>& xs, const std::vector<double>& w,
                                  const task_settings& s, std::string_view key) {
  std::vector<torch::Tensor> deltas;
  deltas.reserve(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    auto d = xs[i] - base;
    if (s.trim) d = mk::keep_largest(d, s.density, true);  // TIES's trim: at least one element
    if (s.drop) d = drop_random(d, s.density, s.rescale, mk::key_seed(s.seed, key, i));
    deltas.push_back(d.mul_(w[i]));
  }
  auto stacked = torch::stack(deltas);
  deltas.clear();
  auto weights = torch::tensor(std::vector<double>(w.begin(), w.end()), torch::kDouble).to(base.scalar_type());
  while (weights.dim() < stacked.dim()) weights = weights.unsqueeze(-1);
  torch::Tensor mixed, divisor;
  if (s.elect) {
    auto mask = mk::agreeing(stacked, false);  // mergekit: the sign of the weighted sum
    mixed = (stacked * mask).sum(0);
    divisor = (weights * mask).sum(0);
    divisor.masked_fill_(divisor == 0, 1);
  } else {
    mixed = stacked.sum(0);
    divisor = weights.sum(0);
    divisor.masked_fill_(divisor.abs() < 1e-8, 1);
  }
  if (s.normalize) mixed.div_(divisor);
  if (s.lambda != 1) mixed.mul_(s.lambda);
  return base + mixed;
}

// Each tensor as one vector; linear where they are nearly parallel.
inline torch::Tensor slerp(double t, const torch::Tensor& a, const torch::Tensor& b) {
  const auto dtype = a.scalar_type();
  auto tt = torch::tensor(t, torch::kDouble).to(dtype);
  if (a.numel() == 0) return (1 - tt) * a + tt * b;
  const double eps = 1e-8;
  auto na = torch::linalg_vector_norm(a, 2, c10::nullopt, false, c10::nullopt);
  auto nb = torch::linalg_vector_norm(b, 2, c10::nullopt, false, c10::nullopt);
  na = torch::where(na > eps, na, torch::ones_like(na));
  nb = torch::where(nb > eps, nb, torch::ones_like(nb));
  auto dot = ((a / na) * (b / nb)).sum().clamp(-1, 1);
  auto linear = dot.abs() > 0.9995;
  auto theta = torch::acos(torch::where(linear, torch::zeros_like(dot), dot));
  auto sin_theta = torch::sin(theta);
  auto ca = torch::where(linear, 1 - tt, torch::sin((1 - tt) * theta) / sin_theta);
  auto cb = torch::where(linear, tt, torch::sin(tt * theta) / sin_theta);
  return ca * a + cb * b;
}

inline bool is_float(c10::ScalarType t) {
  return t == torch::kFloat || t == torch::kDouble || t == torch::kHalf || t == torch::kBFloat16;
}

// Gives back the mapped pages a file input's tensor occupies (see mapped_file::release).
inline void release_pages(const torch::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || t.numel() == 0) return;
  const auto* file = mapped_file::viewed_by(t.storage());
  if (!file) return;
  const auto* p = static_cast<const std::byte*>(t.data_ptr());
  if (p < file->data() || p >= file->data() + file->size()) return;
  file->release(static_cast<std::size_t>(p - file->data()), static_cast<std::size_t>(t.numel()) * t.element_size());
}

} // namespace detail::combine

GRAFT_FUNC std::string_view to_string(combine_method m) noexcept {
  switch (m) {
    case combine_method::interpolate: return "interpolate";
    case combine_method::linear: return "linear";
    case combine_method::task_arithmetic: return "task_arithmetic";
    case combine_method::ties: return "ties";
    case combine_method::dare_linear: return "dare_linear";
    case combine_method::dare_ties: return "dare_ties";
    case combine_method::slerp: return "slerp";
  }
  return "unknown";
}

GRAFT_FUNC std::optional<combine_method> combine_method_named(std::string_view name) noexcept {
  std::string n(name);
  std::replace(n.begin(), n.end(), '-', '_');
  for (auto m : {combine_method::interpolate, combine_method::linear, combine_method::task_arithmetic, combine_method::ties,
                 combine_method::dare_linear, combine_method::dare_ties, combine_method::slerp})
    if (n == to_string(m)) return m;
  if (n == "average") return combine_method::linear;
  if (n == "wise_ft") return combine_method::interpolate;
  return std::nullopt;
}

GRAFT_FUNC std::string combine_report::to_string() const {
  std::string s = fmt::format("{}: {} tensors ({} bytes); {} combined, {} taken unchanged", method, tensors, bytes, combined,
                              taken.size());
  if (!file.empty()) s += fmt::format("; written to {}", file);
  for (const auto& [text, n] : rules) s += fmt::format("\n  where {}: {} keys", text, n);
  const std::size_t shown = std::min<std::size_t>(taken.size(), 8);
  for (std::size_t i = 0; i < shown; ++i) s += fmt::format("\n  {} <- {}", taken[i].first, taken[i].second);
  if (taken.size() > shown) s += fmt::format("\n  ... and {} more taken", taken.size() - shown);
  return s;
}

GRAFT_FUNC combination::combination(combine_method m, std::vector<combine_input> inputs, std::optional<combine_input> base)
    : method_(m), inputs_(std::move(inputs)), base_(std::move(base)) {}

GRAFT_FUNC std::string combination::describe() const {
  std::string in;
  for (const auto& i : inputs_) in += (in.empty() ? "" : ", ") + i.name();
  std::string s = fmt::format("{}({}", graft::to_string(method_), in);
  if (base_) s += fmt::format("; base {}", base_->name());
  switch (method_) {
    case combine_method::interpolate:
    case combine_method::slerp: s += fmt::format("; t={}", t_); break;
    case combine_method::ties:
    case combine_method::dare_linear:
    case combine_method::dare_ties: s += fmt::format("; density={}", density_); break;
    default: break;
  }
  if (!weights_.empty()) s += fmt::format("; weights={}", fmt::join(weights_, ","));
  if (lambda_ != 1) s += fmt::format("; lambda={}", lambda_);
  return s + ")";
}

// The inputs read and checked, and for each output key what makes it.
struct combination::plan {
  std::vector<state_dict> inputs;          // base first, when there is one
  std::vector<const combine_input*> from;  // the combine_input of each
  bool has_base = false;
  std::vector<tensor_spec> specs;          // the output, in the reference's key order
  std::vector<std::vector<const torch::Tensor*>> tensors;  // per key, per input
  std::vector<int> rule;                   // per key: the rule that applies, or -1
  std::vector<std::optional<std::size_t>> take;  // per key: the input (index into `inputs`) copied
  std::vector<std::string> why_taken;
};

GRAFT_FUNC combination::plan combination::make_plan() const {
  const bool task = method_ == combine_method::task_arithmetic || method_ == combine_method::ties ||
                    method_ == combine_method::dare_linear || method_ == combine_method::dare_ties;
  auto option = [&](std::string what) { throw option_error(fmt::format("{}: {}", describe(), what)); };
  // The shape of the call, before any file is read.
  if (inputs_.empty()) option("no inputs");
  if (task && !base_) option("this method needs a base (the checkpoint the task vectors are taken from)");
  if ((method_ == combine_method::linear || method_ == combine_method::interpolate) && base_)
    option("this method takes no base: pass every checkpoint as an input");
  if (method_ == combine_method::interpolate && inputs_.size() != 2) option(fmt::format("interpolate takes 2 inputs, not {}", inputs_.size()));
  if (method_ == combine_method::slerp && !(inputs_.size() == 1 && base_)) option("slerp takes exactly two checkpoints (a base and one input)");
  const bool by_t = method_ == combine_method::interpolate || method_ == combine_method::slerp;
  auto weighted = [&](const std::vector<double>& w) { return !w.empty(); };
  if (by_t && (weighted(weights_) || std::any_of(rules_.begin(), rules_.end(), [&](const rule& r) { return weighted(r.params.weights); })))
    option(fmt::format("{} mixes by t, not by weights", graft::to_string(method_)));
  auto check_params = [&](const std::vector<double>& w, std::optional<double> t, std::optional<double> density,
                          std::optional<double> lambda, std::string_view where) {
    if (!w.empty() && w.size() != inputs_.size())
      option(fmt::format("{}{} weights for {} inputs", where, w.size(), inputs_.size()));
    for (double v : w)
      if (!std::isfinite(v)) option(fmt::format("{}weight {} is not finite", where, v));
    if (method_ == combine_method::linear && !w.empty() && normalize_.value_or(true)) {
      double sum = 0;
      for (double v : w) sum += v;
      if (std::abs(sum) < 1e-12) option(fmt::format("{}the weights sum to 0, and linear divides by their sum", where));
    }
    if (t && !std::isfinite(*t)) option(fmt::format("{}t = {} is not finite", where, *t));
    if (density && !(*density > 0 && *density <= 1)) option(fmt::format("{}density = {} is not in (0, 1]", where, *density));
    if (lambda && !std::isfinite(*lambda)) option(fmt::format("{}lambda = {} is not finite", where, *lambda));
  };
  check_params(weights_, t_, density_, lambda_, "");
  for (const auto& r : rules_) {
    const auto& p = r.params;
    check_params(p.weights, p.t, p.density, p.lambda, fmt::format("where {}: ", r.text));
    if (p.take && *p.take != from_base && *p.take >= inputs_.size())
      option(fmt::format("where {}: take = {}, but there are {} inputs", r.text, *p.take, inputs_.size()));
    if (p.take && *p.take == from_base && !base_) option(fmt::format("where {}: take = from_base, but there is no base", r.text));
  }

  plan pl;
  pl.has_base = base_.has_value();
  if (base_) pl.from.push_back(&*base_);
  for (const auto& i : inputs_) pl.from.push_back(&i);
  for (const auto* i : pl.from) pl.inputs.push_back(i->load());
  const state_dict& ref = pl.inputs[0];
  if (ref.empty()) throw key_error(fmt::format("{}: {} holds no tensors", describe(), pl.from[0]->name()), {.file = pl.from[0]->name()});

  // Every difference between the inputs, reported together before anything is computed.
  std::vector<std::string> problems;
  error_kind kind = error_kind::key;
  std::string first_key, first_file;
  auto problem = [&](error_kind k, const std::string& file, const std::string& key, std::string text) {
    if (problems.empty()) kind = k, first_key = key, first_file = file;
    if (problems.size() < 20) problems.push_back(std::move(text));
    else if (problems.size() == 20) problems.push_back("...");
  };
  for (std::size_t j = 1; j < pl.inputs.size(); ++j) {
    const auto& sd = pl.inputs[j];
    std::size_t missing = 0, extra = 0;
    for (const auto& e : ref)
      if (!sd.contains(e.key) && missing++ < 5)
        problem(error_kind::key, pl.from[j]->name(), e.key, fmt::format("'{}' is in {} but not in {}", e.key, pl.from[0]->name(), pl.from[j]->name()));
    for (const auto& e : sd)
      if (!ref.contains(e.key) && extra++ < 5)
        problem(error_kind::key, pl.from[j]->name(), e.key, fmt::format("'{}' is in {} but not in {}", e.key, pl.from[j]->name(), pl.from[0]->name()));
    if (missing > 5) problem(error_kind::key, pl.from[j]->name(), "", fmt::format("... {} keys of {} missing from {} in all", missing, pl.from[0]->name(), pl.from[j]->name()));
    if (extra > 5) problem(error_kind::key, pl.from[j]->name(), "", fmt::format("... {} keys of {} not in {} in all", extra, pl.from[j]->name(), pl.from[0]->name()));
  }
  std::vector<std::size_t> rule_hits(rules_.size(), 0);
  for (const auto& e : ref) {
    std::vector<const torch::Tensor*> ts;
    ts.push_back(&e.tensor);
    bool complete = true;
    for (std::size_t j = 1; j < pl.inputs.size(); ++j) {
      const auto* other = pl.inputs[j].find(e.key);
      if (!other) { complete = false; continue; }
      ts.push_back(&other->tensor);
      if (other->tensor.sizes() != e.tensor.sizes())
        problem(error_kind::shape, pl.from[j]->name(), e.key,
                fmt::format("'{}' is {} in {} but {} in {}", e.key, c10::str(e.tensor.sizes()), pl.from[0]->name(),
                            c10::str(other->tensor.sizes()), pl.from[j]->name()));
      else if (other->tensor.scalar_type() != e.tensor.scalar_type())
        problem(error_kind::shape, pl.from[j]->name(), e.key,
                fmt::format("'{}' is {} in {} but {} in {} (cast the inputs to one dtype first: read(path) | cast(...))", e.key,
                            c10::toString(e.tensor.scalar_type()), pl.from[0]->name(), c10::toString(other->tensor.scalar_type()),
                            pl.from[j]->name()));
    }
    if (!complete) continue;
    int r = -1;
    for (std::size_t k = 0; k < rules_.size() && r < 0; ++k)
      if (rules_[k].matches(entry_view(e.key, &e.tensor))) r = static_cast<int>(k), ++rule_hits[k];
    std::optional<std::size_t> take;
    std::string why;
    if (r >= 0 && rules_[r].params.take) {
      auto t = *rules_[r].params.take;
      take = t == from_base ? 0 : t + (pl.has_base ? 1 : 0);
      why = "where " + rules_[r].text;
    } else if (!detail::combine::is_float(e.tensor.scalar_type())) {
      // Integers (num_batches_tracked, index buffers) are never averaged: taken when every input agrees.
      for (std::size_t j = 1; j < ts.size(); ++j)
        if (ts[j]->sizes() == e.tensor.sizes() && ts[j]->scalar_type() == e.tensor.scalar_type() && !torch::equal(*ts[j], e.tensor)) {
          problem(error_kind::option, pl.from[j]->name(), e.key,
                  fmt::format("'{}' is a {} tensor that differs between {} and {}: integers are not averaged; take it from one "
                              "input with where(..., {{.take = i}})", e.key, c10::toString(e.tensor.scalar_type()),
                              pl.from[0]->name(), pl.from[j]->name()));
          break;
        }
      take = 0;
      why = fmt::format("{}, equal in every input", c10::toString(e.tensor.scalar_type()));
    }
    pl.specs.push_back({e.key, e.tensor.scalar_type(), e.tensor.sizes().vec()});
    pl.tensors.push_back(std::move(ts));
    pl.rule.push_back(r);
    pl.take.push_back(take);
    pl.why_taken.push_back(std::move(why));
  }
  for (std::size_t k = 0; k < rules_.size(); ++k)
    if (rule_hits[k] == 0 && !rules_[k].may_be_empty)
      throw selection_error(fmt::format("{}: where {} picks none of the {} keys", describe(), rules_[k].text, ref.size()));
  if (!problems.empty())
    throw_error(kind, fmt::format("{}: the inputs differ ({} problems):\n  {}", describe(), problems.size(), fmt::join(problems, "\n  ")),
                {.file = first_file, .key = first_key, .file_in_message = true});
  return pl;
}

GRAFT_FUNC torch::Tensor combination::make(const plan& p, std::size_t i) const {
  namespace dc = detail::combine;
  const auto& ts = p.tensors[i];
  const auto out_dtype = p.specs[i].dtype;
  if (p.take[i]) return *ts[*p.take[i]];
  const combine_params* rp = p.rule[i] >= 0 ? &rules_[p.rule[i]].params : nullptr;
  const auto& w0 = rp && !rp->weights.empty() ? rp->weights : weights_;
  const double t = rp && rp->t ? *rp->t : t_;
  const double density = rp && rp->density ? *rp->density : density_;
  const double lambda = rp && rp->lambda ? *rp->lambda : lambda_;
  const auto cd = out_dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto in = [&](std::size_t j) { return ts[j]->to(cd); };
  std::vector<torch::Tensor> xs;
  const std::size_t first = p.has_base ? 1 : 0;
  for (std::size_t j = first; j < ts.size(); ++j) xs.push_back(in(j));
  std::vector<double> w = w0.empty() ? std::vector<double>(xs.size(), 1.0) : w0;
  torch::Tensor out;
  switch (method_) {
    case combine_method::interpolate: out = dc::linear(xs, {1 - t, t}, true); break;
    case combine_method::linear: out = dc::linear(xs, w, normalize_.value_or(true)); break;
    case combine_method::slerp: out = dc::slerp(t, in(0), xs[0]); break;
    default: {
      dc::task_settings s;
      s.trim = method_ == combine_method::ties;
      s.drop = method_ == combine_method::dare_linear || method_ == combine_method::dare_ties;
      s.elect = method_ == combine_method::ties || method_ == combine_method::dare_ties;
      s.normalize = normalize_.value_or(method_ == combine_method::ties);
      s.density = density;
      s.lambda = lambda;
      s.rescale = rescale_;
      s.seed = seed_;
      out = dc::task_vectors(in(0), xs, w, s, p.specs[i].name);
    }
  }
  return out.to(out_dtype);
}

GRAFT_FUNC combine_report combination::run(
    const std::function<void(std::vector<tensor_spec>, const std::function<torch::Tensor(std::size_t)>&)>& sink) const {
  auto p = make_plan();
  combine_report report;
  report.method = describe();
  for (const auto* f : p.from) report.inputs.push_back(f->name());
  std::vector<std::size_t> hits(rules_.size(), 0);
  std::int64_t total = 0;
  for (std::size_t i = 0; i < p.specs.size(); ++i) {
    if (p.rule[i] >= 0) ++hits[p.rule[i]];
    if (p.take[i]) report.taken.emplace_back(p.specs[i].name, fmt::format("{} ({})", p.from[*p.take[i]]->name(), p.why_taken[i]));
    else ++report.combined;
    total += p.tensors[i][0]->numel() * static_cast<std::int64_t>(c10::elementSize(p.specs[i].dtype));
  }
  for (std::size_t k = 0; k < rules_.size(); ++k) report.rules.emplace_back(rules_[k].text, hits[k]);
  report.tensors = p.specs.size();
  report.bytes = total;
  std::size_t done = 0;
  std::int64_t bytes_done = 0;
  auto produce = [&](std::size_t i) {
    auto t = make(p, i);
    // A file input's pages of this key are not needed again: give them back, so reading N
    // inputs costs page cache, not this process's memory.
    for (std::size_t j = 0; j < p.from.size(); ++j)
      if (p.from[j]->is_file()) detail::combine::release_pages(*p.tensors[i][j]);
    ++done;
    bytes_done += t.numel() * static_cast<std::int64_t>(t.element_size());
    if (progress_) progress_({done, p.specs.size(), bytes_done, total, p.specs[i].name});
    return t;
  };
  sink(p.specs, produce);
  return report;
}

GRAFT_FUNC combine_report combination::check() const {
  return run([](std::vector<tensor_spec>, const std::function<torch::Tensor(std::size_t)>&) {});
}

GRAFT_FUNC combine_report combination::save(const std::string& path, checkpoint_format f) const {
  auto report = run([&](std::vector<tensor_spec> specs, const std::function<torch::Tensor(std::size_t)>& produce) {
    graft::save(specs, produce, path, f);
  });
  report.file = path;
  return report;
}

GRAFT_FUNC combine_report combination::save(const std::string& path) const { return save(path, format_for(path)); }

GRAFT_FUNC std::pair<state_dict, combine_report> combination::compute() const {
  state_dict out;
  auto report = run([&](std::vector<tensor_spec> specs, const std::function<torch::Tensor(std::size_t)>& produce) {
    out.reserve(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      auto t = produce(i);
      // A taken tensor may view an input's mapped file: own it.
      if (mapped_file::viewed_by(t.storage())) t = t.clone();
      out.insert(specs[i].name, std::move(t));
    }
  });
  return {std::move(out), std::move(report)};
}

GRAFT_FUNC combination interpolate(combine_input a, combine_input b, double alpha) {
  std::vector<combine_input> in;
  in.push_back(std::move(a));
  in.push_back(std::move(b));
  return std::move(combination(combine_method::interpolate, std::move(in)).t(alpha));
}

GRAFT_FUNC combination average(std::vector<combine_input> inputs, std::vector<double> weights) {
  return std::move(combination(combine_method::linear, std::move(inputs)).weights(std::move(weights)));
}

GRAFT_FUNC combination task_arithmetic(combine_input base, std::vector<combine_input> inputs, double lambda) {
  return std::move(combination(combine_method::task_arithmetic, std::move(inputs), std::move(base)).lambda(lambda));
}

GRAFT_FUNC combination ties(combine_input base, std::vector<combine_input> inputs, double density) {
  return std::move(combination(combine_method::ties, std::move(inputs), std::move(base)).density(density));
}

GRAFT_FUNC combination dare(combine_input base, std::vector<combine_input> inputs, double density, std::uint64_t seed, bool with_ties) {
  return std::move(combination(with_ties ? combine_method::dare_ties : combine_method::dare_linear, std::move(inputs), std::move(base))
                       .density(density)
                       .seed(seed));
}

GRAFT_FUNC combination slerp(combine_input a, combine_input b, double t) {
  std::vector<combine_input> in;
  in.push_back(std::move(b));
  return std::move(combination(combine_method::slerp, std::move(in), std::move(a)).t(t));
}

GRAFT_FUNC greedy_soup_result greedy_soup(torch::nn::Module& model, const std::vector<combine_input>& candidates,
                                          const std::function<double(torch::nn::Module&)>& evaluate) {
  if (candidates.empty()) throw option_error("greedy_soup: no candidates");
  greedy_soup_result r;
  // The model as it was, restored if anything fails: a refused candidate leaves no trace.
  state_dict before;
  for (const auto& e : state_dict(model)) before.insert(e.key, e.tensor.detach().clone());
  auto load = [&](const state_dict& sd) { merge(model, sd); };
  try {
    for (const auto& c : candidates) {
      load(c.load());
      r.alone.push_back(evaluate(model));
    }
    r.order.resize(candidates.size());
    for (std::size_t i = 0; i < r.order.size(); ++i) r.order[i] = i;
    std::stable_sort(r.order.begin(), r.order.end(), [&](std::size_t a, std::size_t b) { return r.alone[a] > r.alone[b]; });

    // The soup's running sum of floating tensors; the rest from the first member.
    state_dict sum;
    auto add = [&](const state_dict& sd, bool first) {
      if (first) {
        for (const auto& e : sd) {
          auto t = detail::combine::is_float(e.tensor.scalar_type())
                       ? e.tensor.to(e.tensor.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat, false, true)
                       : e.tensor.clone();
          sum.insert(e.key, std::move(t));
        }
        return;
      }
      for (const auto& e : sum)
        if (detail::combine::is_float(e.tensor.scalar_type())) {
          const auto* o = sd.find(e.key);
          if (!o) throw key_error(fmt::format("greedy_soup: a candidate has no '{}'", e.key), {.key = e.key});
          e.tensor.add_(o->tensor);
        }
    };
    auto soup_of = [&](std::size_t n, const state_dict* extra) {
      state_dict s;
      for (const auto& e : sum) {
        if (!detail::combine::is_float(e.tensor.scalar_type())) { s.insert(e.key, e.tensor); continue; }
        auto t = e.tensor;
        if (extra) t = t + extra->at(e.key);
        s.insert(e.key, t / static_cast<double>(n));
      }
      return s;
    };
    add(candidates[r.order[0]].load(), true);
    r.kept.push_back(r.order[0]);
    r.score = r.alone[r.order[0]];
    r.tried.push_back(r.score);
    for (std::size_t k = 1; k < r.order.size(); ++k) {
      auto c = candidates[r.order[k]].load();
      load(soup_of(r.kept.size() + 1, &c));
      double score = evaluate(model);
      r.tried.push_back(score);
      if (score >= r.score) {
        add(c, false);
        r.kept.push_back(r.order[k]);
        r.score = score;
      }
    }
    load(soup_of(r.kept.size(), nullptr));
  } catch (...) {
    merge(model, before);
    throw;
  }
  return r;
}

} // namespace graft
