#pragma once
// Process groups for graft's distributed layer: c10d's own stores and ProcessGroupGloo, made
// with timeouts so that a missing or failing rank raises an error instead of hanging, and
// torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) as the rendezvous.
// Everything else in graft::dist takes any c10d::ProcessGroup (Gloo, NCCL, MPI).

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/types.h>
#include <torch/version.h>

#include <graft/error.hpp>

namespace graft::dist {

/// A shared handle to a c10d process group (any backend).
using process_group = c10::intrusive_ptr<c10d::ProcessGroup>;
/// A shared handle to a c10d rendezvous store.
using store = c10::intrusive_ptr<c10d::Store>;

/// Options of gloo_group().
struct gloo_options {
  /// Every rendezvous and collective fails after this long instead of waiting for a lost rank.
  std::chrono::milliseconds timeout{30'000};
  /// The address this rank's Gloo device binds to: loopback for one machine; the machine's
  /// own address (or "" for Gloo's default interface) when ranks span machines.
  std::string hostname = "127.0.0.1";
  /// Gloo worker threads that run collectives.
  int threads = 2;
};

/// A store in a file that every rank can reach: rendezvous without a network port.
inline store file_store(const std::string& path, int world_size) {
  return c10::make_intrusive<c10d::FileStore>(path, world_size);
}

/// A TCP store served by rank 0 at host:port, the rendezvous across machines.
inline store tcp_store(const std::string& host, std::uint16_t port, int rank, int world_size,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000)) {
  c10d::TCPStoreOptions o;
  o.port = port;
  o.isServer = rank == 0;
  o.numWorkers = static_cast<std::size_t>(world_size);
  o.waitWorkers = false;  // every rank meets in the process group's rendezvous instead
  o.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, o);
  } catch (const std::exception& e) {
    throw distributed_error(fmt::format("rank {} of {}: cannot {} the TCP store at {}:{}: {}", rank, world_size,
                                        rank == 0 ? "serve" : "reach", host, port, e.what()));
  }
}

/// A Gloo process group (CPU tensors) over `s`, each collective bounded by `o.timeout`.
inline process_group gloo_group(store s, int rank, int world_size, gloo_options o = {}) {
  if (rank < 0 || rank >= world_size)
    throw option_error(fmt::format("rank {} is outside a world of {} processes", rank, world_size));
  s->setTimeout(o.timeout);
  auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
  opts->devices.push_back(o.hostname.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                             : c10d::ProcessGroupGloo::createDeviceForHostname(o.hostname));
  opts->threads = o.threads;
  try {
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(s, rank, world_size, opts);
#if TORCH_VERSION_MAJOR >= 2
    // From libtorch 2 a ProcessGroup dispatches each collective to a backend by device; Gloo
    // is one (checked with 2.13), and serves CPU tensors here.
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(s, rank, world_size);
    pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    return pg;
#else
    return gloo;
#endif
  } catch (const std::exception& e) {
    throw distributed_error(fmt::format("rank {} of {}: the Gloo rendezvous did not complete within {} ms: {}", rank,
                                        world_size, o.timeout.count(), e.what()));
  }
}

/// Where this process stands in a run started by torchrun or graft::dist::launch_local.
struct env_rendezvous {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  std::uint16_t master_port = 29500;
};

/// Reads torchrun's variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
/// std::nullopt if RANK or WORLD_SIZE is unset (a single-process run).
inline std::optional<env_rendezvous> rendezvous_from_env() {
  auto get = [](const char* name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name)) return std::string(v);
    return std::nullopt;
  };
  auto number = [](const char* name, const std::string& text) {
    try {
      std::size_t used = 0;
      long v = std::stol(text, &used);
      if (used != text.size() || v < 0) throw std::invalid_argument(text);
      return v;
    } catch (const std::exception&) {
      throw option_error(fmt::format("environment variable {}='{}' is not a non-negative integer", name, text));
    }
  };
  auto rank = get("RANK"), world = get("WORLD_SIZE");
  if (!rank || !world) return std::nullopt;
  env_rendezvous r;
  r.rank = static_cast<int>(number("RANK", *rank));
  r.world_size = static_cast<int>(number("WORLD_SIZE", *world));
  if (auto lr = get("LOCAL_RANK")) r.local_rank = static_cast<int>(number("LOCAL_RANK", *lr));
  if (auto a = get("MASTER_ADDR")) r.master_addr = *a;
  if (auto p = get("MASTER_PORT")) r.master_port = static_cast<std::uint16_t>(number("MASTER_PORT", *p));
  if (r.rank >= r.world_size)
    throw option_error(fmt::format("RANK={} is outside WORLD_SIZE={}", r.rank, r.world_size));
  return r;
}

/// A Gloo group from torchrun's environment: rank 0 serves a TCP store at MASTER_ADDR:
/// MASTER_PORT. An option_error if the environment does not describe a distributed run.
inline process_group gloo_group_from_env(gloo_options o = {}) {
  auto r = rendezvous_from_env();
  if (!r) throw option_error("RANK and WORLD_SIZE are not set: start the program with torchrun or graft::dist::launch_local");
  return gloo_group(tcp_store(r->master_addr, r->master_port, r->rank, r->world_size, o.timeout), r->rank,
                    r->world_size, std::move(o));
}

namespace detail {

/// The group behind a handle; option_error naming the call for a null one.
inline c10d::ProcessGroup& group_of(const process_group& pg, std::string_view what) {
  if (!pg) throw option_error(fmt::format("{}: the process group is null", what));
  return *pg;
}

/// "rank 1 of 2", the start of every distributed message.
inline std::string who(const c10d::ProcessGroup& pg) {
  return fmt::format("rank {} of {}", pg.getRank(), pg.getSize());
}

/// Waits for a collective, turning the backend's failure (a timeout, a lost peer) into a
/// distributed_error that says which rank was doing what.
inline void wait(const c10d::ProcessGroup& pg, const c10::intrusive_ptr<c10d::Work>& work, std::string_view what) {
  try {
    work->wait();
  } catch (const graft::error&) {
    throw;
  } catch (const std::exception& e) {
    throw distributed_error(fmt::format("{}: {} failed: {}", who(pg), what, e.what()));
  }
}

/// Starts a collective with the same error translation as wait().
template <class F>
c10::intrusive_ptr<c10d::Work> start(const c10d::ProcessGroup& pg, std::string_view what, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const graft::error&) {
    throw;
  } catch (const std::exception& e) {
    throw distributed_error(fmt::format("{}: {} failed: {}", who(pg), what, e.what()));
  }
}

/// Device for graft's own small bookkeeping tensors: NCCL only moves CUDA tensors.
inline torch::Device aux_device(const c10d::ProcessGroup& pg) {
  return pg.getBackendName() == "nccl" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

} // namespace detail
} // namespace graft::dist
