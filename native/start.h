// Starting a container without moving the caller's cgroups.
//
// liblxc 5.0.2's daemonized start writes the pid of the process that called start() into the
// new `lxc.monitor.<name>` cgroup of every hierarchy. A long-lived Node process would leave its
// own cgroups for good, and every later start would leak a `lxc.monitor.<name>-N` directory. So
// start() is called by a short-lived handler process of lxq_runner: the handler is what liblxc
// moves, and it exits as soon as the container runs, leaving the monitor cgroup to the monitor.
// The handler also gives init a clean signal state (Node blocks and ignores some signals).
#pragma once

#include <lxc/lxccontainer.h>

#include <string>
#include <vector>

#include "container.h"

namespace lxq {

// Starts `c` daemonized from its saved configuration (argv empty = the configured init).
// Blocks until the container is RUNNING or has failed; call it off the JS thread.
bool StartDetached(lxc_container* c, std::vector<std::string>& argv, Failure& failure);

}  // namespace lxq
