#include "protocol.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace lxq::runner {

int Send(int sock, const std::vector<std::string>& fields, const std::vector<int>& fds) {
  std::string body;
  for (const auto& f : fields) body.append(f).push_back('\0');
  if (body.size() > kMaxMessage || fds.size() > static_cast<size_t>(kMaxFds)) return EMSGSIZE;
  struct iovec iov = {body.data(), body.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

int Receive(int sock, std::vector<std::string>& fields, std::vector<int>& fds) {
  // Not zero-filled: only what a message writes is touched (most are a few hundred bytes).
  std::unique_ptr<char[]> body(new char[kMaxMessage]);
  struct iovec iov = {body.get(), kMaxMessage};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  if (n == 0) return ECONNRESET;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* received = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds.insert(fds.end(), received, received + count);
  }
  fields.clear();
  size_t start = 0;
  for (size_t i = 0; i < static_cast<size_t>(n); i++) {
    if (body[i] == '\0') {
      fields.emplace_back(body.get() + start, i - start);
      start = i + 1;
    }
  }
  return 0;
}

std::vector<std::string> AttachFields(const std::string& name, const std::string& lxcpath, const std::string& cwd, int64_t uid, int64_t gid,
                                      bool pty, const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::vector<std::string> fields = {"attach", name, lxcpath, cwd, std::to_string(uid < 0 ? 0 : uid), std::to_string(gid < 0 ? 0 : gid),
                                     pty ? "1" : "0", std::to_string(argv.size())};
  fields.insert(fields.end(), argv.begin(), argv.end());
  fields.insert(fields.end(), env.begin(), env.end());
  return fields;
}

}  // namespace lxq::runner
