// Running a command inside a container: liblxc attach with pipes, returning at once.
//
// liblxc's attach_run_wait would block a thread per command and deadlock on output larger than
// a pipe buffer if read afterwards; here the process is handed back as a pid + pidfd and three
// pipe ends, which the event loop reads while the process runs.
#pragma once

#include <lxc/lxccontainer.h>

#include <cstdint>
#include <string>
#include <vector>

#include "container.h"

namespace lxq {

struct AttachRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // the whole environment ("K=V"): nothing of Node's is kept
  std::string cwd;               // empty: the user's default
  int64_t uid = -1, gid = -1;    // -1: root of the container
  bool pty = false;              // one pseudo-terminal for stdin, stdout and stderr
  uint16_t cols = 80, rows = 24;
};

// The command is attached by lxq_runner (see runner/main.cc), which also reaps it. On success
// `out` holds pid, pidfd, our ends of stdin, stdout and stderr (with a pty: the terminal's master
// as stdin and -1 for the other two, a terminal merges them), and the channel on which the
// runner reports the exit status.
bool AttachProcess(lxc_container* c, AttachRequest& req, std::vector<int64_t>& out, Failure& failure);

}  // namespace lxq
