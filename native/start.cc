#include "start.h"

#include <unistd.h>

#include <cstdlib>

#include "runner/client.h"

namespace lxq {

bool StartDetached(lxc_container* c, std::vector<std::string>& args, Failure& failure) {
  std::vector<std::string> fields = {"start", c->name, c->config_path};
  fields.insert(fields.end(), args.begin(), args.end());
  runner::Reply reply;
  int rc = runner::Request(fields, {}, reply);
  if (reply.channel >= 0) close(reply.channel);
  if (rc == 0 && !reply.fields.empty()) rc = std::atoi(reply.fields[0].c_str());
  if (rc == 0) return true;
  failure = {"start", rc, ""};
  return false;
}

}  // namespace lxq
