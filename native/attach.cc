#include "attach.h"

#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "runner/client.h"
#include "runner/protocol.h"

namespace lxq {

namespace {

void CloseAll(std::initializer_list<int> fds) {
  for (int fd : fds)
    if (fd >= 0) close(fd);
}

}  // namespace

bool AttachProcess(lxc_container* c, AttachRequest& req, std::vector<int64_t>& out, Failure& failure) {
  // [0] is the command's end, [1] ours; with a pty the slave serves as all three of its ends.
  int in[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
  if (req.pty) {
    int master = -1, slave = -1;
    struct winsize ws = {req.rows, req.cols, 0, 0};
    if (openpty(&master, &slave, nullptr, nullptr, &ws) != 0) {
      failure = {"attach", errno, "openpty"};
      return false;
    }
    fcntl(master, F_SETFD, FD_CLOEXEC);
    fcntl(slave, F_SETFD, FD_CLOEXEC);
    in[0] = slave;
    in[1] = master;
  } else if (pipe2(in, O_CLOEXEC) || pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
    failure = {"attach", errno, "pipe2"};
    CloseAll({in[0], in[1], outp[0], outp[1], errp[0], errp[1]});
    return false;
  }
  int cmdOut = req.pty ? in[0] : outp[1], cmdErr = req.pty ? in[0] : errp[1];

  std::vector<std::string> fields = runner::AttachFields(c->name, c->config_path, req.cwd, req.uid, req.gid, req.pty, req.argv, req.env);
  runner::Reply reply;
  int rc = runner::Request(fields, {in[0], cmdOut, cmdErr}, reply);
  CloseAll({in[0], outp[1], errp[1]});
  if (rc == 0 && !reply.fields.empty()) rc = std::atoi(reply.fields[0].c_str());
  if (rc == 0 && (reply.fields.size() < 2 || reply.fds.empty())) rc = EPROTO;
  if (rc != 0) {
    for (int fd : reply.fds) close(fd);
    if (reply.channel >= 0) close(reply.channel);
    CloseAll({in[1], outp[0], errp[0]});
    failure = {"attach", rc, ""};
    return false;
  }
  out = {std::atoll(reply.fields[1].c_str()), reply.fds[0], in[1], outp[0], errp[0], reply.channel};
  return true;
}

}  // namespace lxq
