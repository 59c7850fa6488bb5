#pragma once
// launch_local: start N copies of a program on this machine with torchrun's environment
// (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), wait for all of them, and stop the
// rest as soon as one fails or the time runs out, so a broken run never hangs. POSIX only.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>

namespace graft::dist {

/// Options of launch_local().
struct launch_options {
  int nproc = 2;                                ///< processes to start: ranks 0 .. nproc-1
  std::chrono::milliseconds timeout{120'000};   ///< the whole run; then every rank still running is killed
  std::string master_addr = "127.0.0.1";        ///< where rank 0 serves the TCP store
  std::uint16_t master_port = 0;                ///< its port; 0 picks a free one
};

/// How a launched run ended.
struct launch_result {
  int exit_code = 0;              ///< 0 if every rank exited with 0
  int failed_rank = -1;           ///< the first rank that failed, or -1
  bool timed_out = false;         ///< whether the timeout stopped the run
  std::vector<int> statuses;      ///< each rank's exit code (128 + signal if killed)
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw io_error("cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw io_error("cannot bind a socket on 127.0.0.1 to find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Runs `argv` (argv[0] is the program's path) as o.nproc processes, each with torchrun's
/// environment added to this one's. Returns once all have exited, or once one failed or the
/// timeout passed (the others are then killed).
inline launch_result launch_local(const std::vector<std::string>& argv, launch_options o = {}) {
  if (argv.empty()) throw option_error("launch_local: no program to run");
  if (o.nproc < 1) throw option_error(fmt::format("launch_local: nproc is {}, it must be at least 1", o.nproc));
  std::uint16_t port = o.master_port ? o.master_port : free_port();
  std::fflush(nullptr);  // children must not inherit and repeat our buffered output
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<pid_t> pids;
  for (int r = 0; r < o.nproc; ++r) {
    // Built before fork: between fork and exec only async-signal-safe calls (no malloc).
    std::string env[] = {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                         "WORLD_SIZE=" + std::to_string(o.nproc), "MASTER_ADDR=" + o.master_addr,
                         "MASTER_PORT=" + std::to_string(port)};
    pid_t pid = ::fork();
    if (pid < 0) {
      for (auto p : pids) ::kill(p, SIGKILL);
      throw io_error("launch_local: fork failed");
    }
    if (pid == 0) {
      for (auto& e : env) ::putenv(e.data());
      ::execv(args[0], args.data());
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  launch_result res;
  res.statuses.assign(static_cast<std::size_t>(o.nproc), -1);
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + o.timeout;
  std::optional<clock::time_point> kill_at;  // after a failure, the others get a grace period
  bool killed = false;
  int running = o.nproc;
  auto kill_rest = [&] {
    for (int r = 0; r < o.nproc; ++r)
      if (res.statuses[r] < 0) ::kill(pids[r], SIGKILL);
    killed = true;
  };
  while (running > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < o.nproc; ++r) {
        if (pids[r] != pid) continue;
        res.statuses[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --running;
        if (res.statuses[r] != 0 && res.failed_rank < 0 && !killed) {
          res.failed_rank = r;
          res.exit_code = res.statuses[r];
          // Long enough for the other ranks' collectives to notice the lost peer and report.
          kill_at = clock::now() + std::chrono::seconds(10);
        }
      }
      continue;
    }
    auto now = clock::now();
    if (!killed && now > deadline) {
      res.timed_out = true;
      if (res.failed_rank < 0) res.exit_code = 124;
      kill_rest();
    } else if (!killed && kill_at && now > *kill_at) {
      kill_rest();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return res;
}

} // namespace graft::dist
