#pragma once
// Combining whole checkpoints in weight space: WiSE-FT interpolation, uniform and weighted
// averages (model soups), task arithmetic, TIES, DARE and SLERP, over N checkpoints of one
// architecture with an optional base. A combination reads its inputs mapped, checks keys,
// shapes and dtypes before anything is computed, and either writes the result one tensor at a
// time (save) or is a pipeline source (load) like read(path).
// Defined in combine-inl.hpp (compiled once in the separately compiled mode).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/protocol.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft {

/// How the floating-point tensors of the inputs become one. The formulas are mergekit's
/// (docs/combine.md gives each).
enum class combine_method {
  interpolate,      ///< (1 − t)·a + t·b: WiSE-FT between two checkpoints
  linear,           ///< Σ wᵢ·xᵢ / Σ wᵢ: a uniform (all wᵢ = 1) or weighted average, a model soup
  task_arithmetic,  ///< base + λ·Σ wᵢ·(xᵢ − base)
  ties,             ///< task vectors trimmed to `density` by magnitude, signs elected, disjoint mean
  dare_linear,      ///< task vectors with each element dropped with 1 − density, rescaled, summed
  dare_ties,        ///< DARE's drop, then TIES's sign election
  slerp,            ///< spherical interpolation from the base (t = 0) to the other input (t = 1)
};

/// The method's name as graft-ckpt takes it: "interpolate", "linear", "task_arithmetic", ...
GRAFT_FUNC std::string_view to_string(combine_method m) noexcept;
/// The method a name gives ("average" is linear, "wise_ft" interpolate; '-' may stand for
/// '_'), or std::nullopt.
GRAFT_FUNC std::optional<combine_method> combine_method_named(std::string_view name) noexcept;

/// How DARE makes up for the elements it drops.
enum class dare_rescale {
  l1,               ///< scale the kept elements so the task vector's L1 norm is unchanged (mergekit's rescale)
  inverse_density,  ///< divide the kept elements by density, 1/(1 − p) (the DARE paper)
  none,             ///< keep the kept elements as they are
};

/// Names the base in combine_params::take.
inline constexpr std::size_t from_base = static_cast<std::size_t>(-1);

/// Settings a rule sets for the keys its selector picks (combination::where); what it leaves
/// unset comes from the combination.
struct combine_params {
  std::vector<double> weights{};     ///< one per input (not the base)
  std::optional<double> t{};         ///< interpolate's and slerp's factor
  std::optional<double> density{};   ///< ties and dare: the fraction of each task vector kept
  std::optional<double> lambda{};    ///< task methods: the factor of the mixed task vector
  std::optional<std::size_t> take{}; ///< copy input `take` (or from_base) unchanged instead of combining
};

/// A checkpoint to combine: a path (any format read() takes: a file, a sharded index, a model
/// folder), a state dict in memory, or any pipeline source (read(p) | at("model") | cast(...)).
class combine_input {
public:
  combine_input(std::string path)
      : name_(path), load_([p = path] { return file_source(p).load(); }), file_(true) {}
  combine_input(const char* path) : combine_input(std::string(path)) {}
  combine_input(state_dict sd, std::string name = "state dict")
      : name_(std::move(name)), load_([sd = std::move(sd)] { return sd; }) {}
  template <class S>
    requires detail::source_like<S> && (!std::is_convertible_v<S, std::string>) && (!std::is_same_v<S, state_dict>)
  combine_input(S src) : name_(src.describe()), load_([s = std::move(src)] { return s.load(); }) {}

  /// How reports and errors name it: the path, or the source's description.
  const std::string& name() const noexcept { return name_; }
  /// Whether it is a file graft opens itself (its mapped pages may be given back as it goes).
  bool is_file() const noexcept { return file_; }
  state_dict load() const { return load_(); }

private:
  std::string name_;
  std::function<state_dict()> load_;
  bool file_ = false;
};

/// Where a combination is (combination::on_progress).
struct combine_progress {
  std::size_t done = 0, total = 0;       ///< tensors
  std::int64_t bytes_done = 0, bytes_total = 0;  ///< output bytes
  std::string_view key;                   ///< the tensor just made
};

/// What a combination did.
struct combine_report {
  std::string method;                                       ///< the combination, as describe() gives it
  std::vector<std::string> inputs;                          ///< the inputs' names, base first if any
  std::size_t combined = 0;                                 ///< tensors computed by the method
  std::vector<std::pair<std::string, std::string>> taken;  ///< key -> the input copied unchanged (and why)
  std::vector<std::pair<std::string, std::size_t>> rules;  ///< each where() rule and the keys it set
  std::size_t tensors = 0;                                  ///< tensors in the result
  std::int64_t bytes = 0;                                   ///< bytes of tensor data in the result
  std::string file;                                         ///< where it was written, if it was
  /// A few lines for people.
  GRAFT_FUNC std::string to_string() const;
};

/// N checkpoints (and a base) and how to combine them. Made by interpolate, average,
/// task_arithmetic, ties, dare and slerp below; set further with the chained setters.
class combination : public pipe_base {
public:
  GRAFT_FUNC combination(combine_method m, std::vector<combine_input> inputs, std::optional<combine_input> base = std::nullopt);

  /// One weight per input (not the base). linear: 1 each by default; task methods: 1 each.
  combination& weights(std::vector<double> w) { weights_ = std::move(w); return *this; }
  /// interpolate's and slerp's factor: 0 gives the first input (slerp: the base), 1 the other.
  combination& t(double t) { t_ = t; return *this; }
  /// ties and dare: the fraction of each task vector's elements kept, in (0, 1].
  combination& density(double d) { density_ = d; return *this; }
  /// Task methods: the factor of the mixed task vector (default 1).
  combination& lambda(double l) { lambda_ = l; return *this; }
  /// Divide by the sum of the weights (of the inputs that agree, for TIES). Defaults as
  /// mergekit's: on for linear and ties, off for task_arithmetic and dare.
  combination& normalize(bool n) { normalize_ = n; return *this; }
  /// DARE's rescaling (default: l1, as mergekit 0.1.5).
  combination& rescale(dare_rescale r) { rescale_ = r; return *this; }
  /// DARE's seed: each key's and input's drop mask depends on this seed, the key and the input's
  /// position only, so a result does not depend on the output format or the order of keys.
  combination& seed(std::uint64_t s) { seed_ = s; return *this; }
  /// For the keys `sel` picks: other settings, or a copy of one input (take). Rules are tried
  /// in the order given, the first that picks a key applies; a rule that picks no key is an
  /// error (a selection_error naming it) unless its selector allows an empty match.
  template <entry_selector S>
  combination& where(S sel, combine_params p) {
    rules_.push_back({[sel](const entry_view& e) { return sel.matches(e); }, sel.describe(), std::move(p), allows_empty<S>});
    return *this;
  }
  /// Called after each tensor is made (for a progress bar).
  combination& on_progress(std::function<void(const combine_progress&)> f) { progress_ = std::move(f); return *this; }

  /// Reads the inputs and checks them, computing nothing: the report of what would be done.
  /// Throws what save() and load() would throw before their first tensor.
  GRAFT_FUNC combine_report check() const;
  /// Writes the result to `path` (format from the name: see format_for), one tensor at a time:
  /// the inputs are read mapped where their format allows, and peak memory is about one output
  /// tensor per input. Atomic: on any error `path` is as it was.
  GRAFT_FUNC combine_report save(const std::string& path) const;
  GRAFT_FUNC combine_report save(const std::string& path, checkpoint_format f) const;
  /// The result in memory, with the report.
  GRAFT_FUNC std::pair<state_dict, combine_report> compute() const;
  /// The result in memory: a combination is a pipeline source (combination | filter(...) | ...).
  state_dict load() const { return compute().first; }
  GRAFT_FUNC std::string describe() const;

  /// combination | save(path): the streamed save above, returning its report.
  friend combine_report operator|(const combination& c, const save_sink& s) { return c.save(s.path(), s.format()); }

private:
  struct rule {
    std::function<bool(const entry_view&)> matches;
    std::string text;
    combine_params params;
    bool may_be_empty;
  };
  struct plan;
  GRAFT_FUNC plan make_plan() const;
  GRAFT_FUNC torch::Tensor make(const plan& p, std::size_t i) const;
  GRAFT_FUNC combine_report run(const std::function<void(std::vector<tensor_spec>, const std::function<torch::Tensor(std::size_t)>&)>& sink) const;

  combine_method method_;
  std::vector<combine_input> inputs_;
  std::optional<combine_input> base_;
  std::vector<double> weights_;
  double t_ = 0.5;
  double density_ = 1.0;
  double lambda_ = 1.0;
  std::optional<bool> normalize_;
  dare_rescale rescale_ = dare_rescale::l1;
  std::uint64_t seed_ = 0;
  std::vector<rule> rules_;
  std::function<void(const combine_progress&)> progress_;
};

/// WiSE-FT: (1 − alpha)·a + alpha·b, a the zero-shot (or pretrained) checkpoint, b the
/// fine-tuned one. Per-part factors with .where(glob("head.**"), {.t = 1.0}).
GRAFT_FUNC combination interpolate(combine_input a, combine_input b, double alpha);
/// A uniform soup (no weights) or a weighted average: Σ wᵢ·xᵢ / Σ wᵢ.
GRAFT_FUNC combination average(std::vector<combine_input> inputs, std::vector<double> weights = {});
/// base + lambda·Σ wᵢ·(xᵢ − base), wᵢ = 1 unless .weights(...).
GRAFT_FUNC combination task_arithmetic(combine_input base, std::vector<combine_input> inputs, double lambda = 1.0);
/// TIES-merging: each task vector trimmed to its `density` largest magnitudes, the sign of
/// each element elected by the total, the agreeing values averaged.
GRAFT_FUNC combination ties(combine_input base, std::vector<combine_input> inputs, double density);
/// DARE: each task-vector element dropped with probability 1 − density (seeded), the rest
/// rescaled, summed (dare_linear) or sign-elected as TIES does (with_ties: dare_ties).
GRAFT_FUNC combination dare(combine_input base, std::vector<combine_input> inputs, double density, std::uint64_t seed,
                            bool with_ties = false);
/// SLERP of two checkpoints, each tensor as one vector: t = 0 gives a, t = 1 gives b; nearly
/// parallel tensors (|cos| > 0.9995) interpolate linearly.
GRAFT_FUNC combination slerp(combine_input a, combine_input b, double t);

/// What greedy_soup found.
struct greedy_soup_result {
  std::vector<std::size_t> order;   ///< the candidates by their own score, best first
  std::vector<double> alone;        ///< each candidate's own score (indexed as the candidates)
  std::vector<std::size_t> kept;    ///< the candidates in the soup, in the order they joined
  std::vector<double> tried;        ///< the score of each soup tried, in `order` (the first: the best alone)
  double score = 0;                 ///< the final soup's score
};

/// A greedy model soup (Wortsman et al. 2022): scores each candidate alone in `model` with
/// `evaluate` (higher is better), then, best first, adds each candidate to the soup (a uniform
/// average) if the soup's score does not drop. `model` ends holding the final soup. Holds the
/// soup's running sum in float32 (float64 for float64 tensors) besides the model: one model's
/// size; the candidates are read mapped, one at a time. Integer tensors (num_batches_tracked)
/// are taken from the soup's first member. Every candidate must load into `model` as
/// merge(model) loads it (its keys, shapes).
GRAFT_FUNC greedy_soup_result greedy_soup(torch::nn::Module& model, const std::vector<combine_input>& candidates,
                                          const std::function<double(torch::nn::Module&)>& evaluate);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/combine/combine-inl.hpp>
#endif
