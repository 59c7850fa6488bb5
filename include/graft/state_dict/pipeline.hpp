#pragma once
// How state-dict pipelines compose:   source | stage | stage | ... | sink
// Sources make a state_dict (read(path), from(module), or a state_dict itself); stages filter,
// rename, descend into or convert entries; sinks end the pipeline (merge into a model, collect,
// save). Consecutive entry stages are fused and run in one pass over the entries; tensor data
// is never copied unless a stage converts it.

#include <array>
#include <concepts>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <graft/state_dict/state_dict.hpp>

namespace graft {

/// Satisfied by a per-entry stage: apply(entry, hits) rewrites the entry or drops it (returns
/// false), counting in `hits` the entries it acted on; apply_extra does the same for the key
/// of a non-tensor extra; finish(hits, entries_in) may then object (e.g. "matched nothing").
template <class S>
concept entry_stage = requires(const S& s, state_entry& e, std::size_t& hits, std::string& key) {
  { s.apply(e, hits) } -> std::same_as<bool>;
  { s.apply_extra(key) } -> std::same_as<bool>;
  { s.finish(hits, std::size_t{}) } -> std::same_as<void>;
  { s.describe() } -> std::convertible_to<std::string>;
};

/// Satisfied by a stage that needs the whole dict at once (validate()).
template <class S>
concept dict_stage = requires(const S& s, state_dict& sd) {
  { s.run(sd) } -> std::same_as<void>;
  { s.describe() } -> std::convertible_to<std::string>;
};

/// Satisfied by a source: load() makes the state dict a pipeline starts from.
template <class S>
concept source = requires(const S& s) {
  { s.load() } -> std::same_as<state_dict>;
  { s.describe() } -> std::convertible_to<std::string>;
};

/// Satisfied by a sink: consume(state_dict&&) ends a pipeline and gives its result.
template <class S>
concept sink = requires(S& s, state_dict&& sd) { s.consume(std::move(sd)); };

/// Base of every source, stage and sink: the home of operator|, found by argument-dependent
/// lookup only.
struct pipe_base;

template <class... Ss> class stages;
template <class Src, class Chain> class pipeline;

namespace detail {
template <class T> struct is_stages : std::false_type {};
template <class... Ss> struct is_stages<stages<Ss...>> : std::true_type {};
template <class T> struct is_pipeline : std::false_type {};
template <class S, class C> struct is_pipeline<pipeline<S, C>> : std::true_type {};

template <class T>
concept stage_like = entry_stage<T> || dict_stage<T>;
template <class T>
concept source_like = source<T> || is_pipeline<T>::value;

/// Stage defaults: extras pass through, nothing to check at the end.
struct stage_defaults {
  bool apply_extra(std::string&) const { return true; }
  void finish(std::size_t, std::size_t) const {}
};
} // namespace detail

/// A state dict in memory as a source (moved in: its tensors are not copied).
struct in_memory_source;

struct pipe_base {
  template <class L, class R>
    requires detail::stage_like<L> && detail::stage_like<R>
  friend auto operator|(L l, R r) {
    return concat(as_stages(std::move(l)), as_stages(std::move(r)));
  }
  template <class L, class R>
    requires detail::source_like<L> && detail::stage_like<R>
  friend auto operator|(L l, R r) {
    return extend(std::move(l), as_stages(std::move(r)));
  }
  template <class L, class R>
    requires detail::source_like<L> && sink<R>
  friend decltype(auto) operator|(L l, R r) {
    return r.consume(l.load());
  }
  template <class R>
    requires detail::stage_like<R>
  friend auto operator|(state_dict sd, R r) {
    return extend(in_memory<R>(std::move(sd)), as_stages(std::move(r)));
  }
  template <class R>
    requires sink<R>
  friend decltype(auto) operator|(state_dict sd, R r) {
    return r.consume(std::move(sd));
  }

private:
  template <class S>
  static auto as_stages(S s) {
    if constexpr (detail::is_stages<S>::value) return s; else return stages<S>(std::move(s));
  }
  template <class... As, class... Bs>
  static stages<As..., Bs...> concat(stages<As...> a, stages<Bs...> b) {
    return stages<As..., Bs...>(std::tuple_cat(std::move(a).parts(), std::move(b).parts()));
  }
  template <class L, class... Bs>
  static auto extend(L l, stages<Bs...> b) {
    if constexpr (detail::is_pipeline<L>::value) {
      auto [src, chain] = std::move(l).parts();
      return pipeline(std::move(src), concat(std::move(chain), std::move(b)));
    } else {
      return pipeline(std::move(l), std::move(b));
    }
  }
  // A template so the call above depends on R: clang checks a non-dependent call's return type
  // where the template is defined, and in_memory_source is still incomplete there.
  template <class>
  static in_memory_source in_memory(state_dict sd);
};

/// Stages in order. A chain of stages is itself a stage: it can be stored, reused and joined
/// with other stages before a source is known.
template <class... Ss>
class stages : public pipe_base {
public:
  explicit stages(Ss... s) : parts_(std::move(s)...) {}
  explicit stages(std::tuple<Ss...> t) : parts_(std::move(t)) {}

  /// Applies every stage to `sd`, fusing consecutive entry stages into one pass.
  void run(state_dict& sd) const { run_from<0>(sd); }
  std::string describe() const {
    std::string s;
    std::apply([&](const auto&... p) { ((s += (s.empty() ? "" : " | ") + std::string(p.describe())), ...); }, parts_);
    return s;
  }
  std::tuple<Ss...> parts() && { return std::move(parts_); }

private:
  static constexpr std::size_t n = sizeof...(Ss);
  template <std::size_t I>
  using nth = std::tuple_element_t<I, std::tuple<Ss...>>;

  template <std::size_t I>
  static constexpr std::size_t end_of_entry_run() {
    if constexpr (I < n) {
      if constexpr (entry_stage<nth<I>>) return end_of_entry_run<I + 1>(); else return I;
    } else {
      return I;
    }
  }

  template <std::size_t I>
  void run_from(state_dict& sd) const {
    if constexpr (I < n) {
      if constexpr (entry_stage<nth<I>>) {
        constexpr std::size_t J = end_of_entry_run<I>();
        pass<I, J>(sd, std::make_index_sequence<J - I>{});
        run_from<J>(sd);
      } else {
        std::get<I>(parts_).run(sd);
        run_from<I + 1>(sd);
      }
    }
  }

  // One pass over the entries applying stages [I, J).
  template <std::size_t I, std::size_t J, std::size_t... K>
  void pass(state_dict& sd, std::index_sequence<K...>) const {
    std::array<std::size_t, J - I> hits{};
    auto entries = sd.release_entries();
    std::size_t in = entries.size();
    state_dict out;
    out.reserve(entries.size());
    for (auto& e : entries)
      if ((std::get<I + K>(parts_).apply(e, hits[K]) && ...))
        out.insert(std::move(e));
    for (auto& [key, v] : sd.extras())
      if ((std::get<I + K>(parts_).apply_extra(key) && ...)) out.add_extra(std::move(key), std::move(v));
    (std::get<I + K>(parts_).finish(hits[K], in), ...);
    sd = std::move(out);
  }

  std::tuple<Ss...> parts_;
};

/// A source and the stages after it. load() runs it; `| sink` ends it.
template <class Src, class Chain>
class pipeline : public pipe_base {
public:
  pipeline(Src s, Chain c) : source_(std::move(s)), chain_(std::move(c)) {}
  /// Reads the source and applies every stage.
  state_dict load() const {
    state_dict sd = source_.load();
    chain_.run(sd);
    return sd;
  }
  std::string describe() const { return source_.describe() + " | " + chain_.describe(); }
  std::pair<Src, Chain> parts() && { return {std::move(source_), std::move(chain_)}; }

private:
  Src source_;
  Chain chain_;
};

struct in_memory_source : pipe_base {
  state_dict sd;
  state_dict load() const { return sd; }
  std::string describe() const { return fmt::format("state dict of {} entries", sd.size()); }
};
template <class>
in_memory_source pipe_base::in_memory(state_dict sd) { return in_memory_source{{}, std::move(sd)}; }

/// Runs a stage or chain of stages on a state dict (the full-call form of `sd | stages`).
template <detail::stage_like S>
state_dict apply(state_dict sd, const S& s) {
  if constexpr (dict_stage<S>) s.run(sd); else stages<S>(s).run(sd);
  return sd;
}

} // namespace graft
