// The addon's side of lxq_runner (see runner/main.cc for why it exists).
#pragma once

#include <string>
#include <vector>

namespace lxq::runner {

struct Reply {
  std::vector<std::string> fields;
  std::vector<int> fds;
  int channel = -1;  // this request's own socket, for later messages (an attached process's exit)
};

// Sends one request with `fds` (which stay the caller's to close) and waits for the first reply.
// Starts the runner on first use, and again if it has died. Returns 0 or an errno.
int Request(const std::vector<std::string>& fields, const std::vector<int>& fds, Reply& reply);

}  // namespace lxq::runner
