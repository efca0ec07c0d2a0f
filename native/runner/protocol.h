// The wire format between the addon and lxq_runner: one SOCK_SEQPACKET message per request or
// reply, made of NUL-terminated strings, with file descriptors alongside (SCM_RIGHTS).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lxq::runner {

constexpr size_t kMaxMessage = 256 * 1024;
constexpr int kMaxFds = 8;

// Sends `fields` (and `fds`, which stay open) as one message. Returns 0 or an errno.
int Send(int sock, const std::vector<std::string>& fields, const std::vector<int>& fds = {});
// Receives one message. Returns 0, or an errno (ECONNRESET for end of stream).
int Receive(int sock, std::vector<std::string>& fields, std::vector<int>& fds);

// The fields of an attach request ("attach", name, lxcpath, cwd, uid, gid, pty, argc, argv...,
// env...), as the addon sends it to the runner and the CLI hands it over (runner/main.cc reads it).
std::vector<std::string> AttachFields(const std::string& name, const std::string& lxcpath, const std::string& cwd, int64_t uid, int64_t gid,
                                      bool pty, const std::vector<std::string>& argv, const std::vector<std::string>& env);

}  // namespace lxq::runner
