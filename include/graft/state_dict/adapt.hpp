#pragma once
// Stages that reshape pretrained tensors for a new task before they are merged:
// adapt_input_channels turns an RGB stem into one for n input channels (timm's
// adapt_input_conv), keep_rows keeps chosen rows of a head (10 of ImageNet's 1000 classes).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/select.hpp>
#include <graft/state_dict/pipeline.hpp>

namespace graft {

/// The stage adapt_input_channels(key, n) makes.
class input_channels_stage : public pipe_base, public detail::stage_defaults {
public:
  input_channels_stage(std::string key, std::int64_t channels) : key_(std::move(key)), n_(channels) {
    if (n_ < 1) throw option_error(fmt::format("{}: the channel count must be at least 1", describe()));
  }
  bool apply(state_entry& e, std::size_t& hits) const {
    if (e.key != key_) return true;
    ++hits;
    e.tensor = adapt(e.tensor);
    return true;
  }
  void finish(std::size_t hits, std::size_t in) const {
    if (hits == 0)
      throw key_error(fmt::format("{}: no entry is named '{}' among {} tensors", describe(), key_, in));
  }
  std::string describe() const { return fmt::format("adapt_input_channels(\"{}\", {})", key_, n_); }

  /// The rule, on one convolution weight [out, in, kh, kw].
  torch::Tensor adapt(const torch::Tensor& w) const {
    if (w.dim() != 4 || !w.is_floating_point())
      throw shape_error(fmt::format("{}: '{}' is a {}-d {} tensor, not a floating-point convolution weight [out, in, kh, kw]",
                                    describe(), key_, w.dim(), c10::toString(w.scalar_type())));
    const auto in = w.size(1);
    if (in == n_) return w;
    auto f = w.to(torch::kFloat);
    torch::Tensor out;
    if (n_ == 1) {
      if (in > 3) {  // a space-to-depth stem: groups of RGB
        if (in % 3 != 0)
          throw shape_error(fmt::format("{}: '{}' has {} input channels, not 3 or a multiple of 3", describe(), key_, in));
        out = f.reshape({w.size(0), in / 3, 3, w.size(2), w.size(3)}).sum(2);
      } else {
        out = f.sum(1, /*keepdim=*/true);
      }
    } else {
      if (in != 3)
        throw shape_error(fmt::format("{}: '{}' has {} input channels; only a 3-channel weight can be spread over {}", describe(),
                                      key_, in, n_));
      const auto repeat = (n_ + 2) / 3;
      out = f.repeat({1, repeat, 1, 1}).narrow(1, 0, n_) * (3.0 / static_cast<double>(n_));
    }
    return out.to(w.scalar_type()).contiguous();
  }

private:
  std::string key_;
  std::int64_t n_;
};

/// Turns the 3-channel (RGB) convolution weight under `key` into one for `channels` input
/// channels, as timm's adapt_input_conv does: for 1 channel the weights are summed over RGB
/// (a space-to-depth stem's 3k channels in groups of 3); for any other count the RGB weights
/// are repeated over the channels and scaled by 3/channels, so a constant image gives the same
/// response. Computed in float32, then cast back. A key_error if no entry has the key, a
/// shape_error if its tensor is not such a weight.
inline input_channels_stage adapt_input_channels(std::string key, std::int64_t channels) {
  return input_channels_stage(std::move(key), channels);
}

/// The stage keep_rows(selector, rows) makes.
template <selector S>
class keep_rows_stage : public pipe_base, public detail::stage_defaults {
  static_assert(S::requirement != needs::module,
                "graft::keep_rows: this selector needs a live module, but checkpoint entries are only keys and tensors");

public:
  keep_rows_stage(S s, std::vector<std::int64_t> rows) : sel_(std::move(s)), rows_(std::move(rows)) {
    if (rows_.empty()) throw option_error(fmt::format("{}: no rows to keep", describe()));
  }
  bool apply(state_entry& e, std::size_t& hits) const {
    if (!sel_.matches(entry_view(e.key, &e.tensor))) return true;
    ++hits;
    if (e.tensor.dim() < 1)
      throw shape_error(fmt::format("{}: '{}' is a scalar and has no rows", describe(), e.key));
    const auto n = e.tensor.size(0);
    for (auto r : rows_)
      if (r < 0 || r >= n)
        throw shape_error(fmt::format("{}: row {} is outside '{}', which has {} rows", describe(), r, e.key, n));
    e.tensor = e.tensor.index_select(0, torch::tensor(rows_, torch::kLong));
    return true;
  }
  void finish(std::size_t hits, std::size_t in) const {
    if constexpr (!allows_empty<S>)
      if (hits == 0) throw selection_error(fmt::format("{}: the selector picks none of the {} entries", describe(), in));
  }
  std::string describe() const {
    return fmt::format("keep_rows({}, {} rows: {}{})", sel_.describe(), rows_.size(),
                       graft::detail::join(rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(rows_.size(), 8)), ", "),
                       rows_.size() > 8 ? ", ..." : "");
  }

private:
  S sel_;
  std::vector<std::int64_t> rows_;
};

/// Keeps rows `rows` (in that order) of every tensor the selector picks, along dimension 0:
/// a pretrained head cut down to the classes a task keeps, e.g.
/// `keep_rows("fc.*"_glob, {404, 430, ...})` turns a 1000-class fc into a 10-class one whose
/// class i is the checkpoint's class rows[i]. The head's shape then matches the model, so a
/// strict merge loads it. A shape_error names a row outside a tensor; picking nothing is a
/// selection_error unless the selector is graft::optional(...).
template <selector S>
keep_rows_stage<S> keep_rows(S s, std::vector<std::int64_t> rows) {
  return keep_rows_stage<S>(std::move(s), std::move(rows));
}

} // namespace graft
