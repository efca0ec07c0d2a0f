// A proxy's stream connection copied in the kernel: splice(2) from each socket into a pipe and
// from the pipe into the other socket, so the bytes never reach user space (lxq's proxy process,
// lib/network/proxy.ts, as LXD's forkproxy copies with Go's io.Copy, which splices too).
#pragma once

#include <napi.h>

namespace lxq {

// spliceStreams(a, b, head, onEnd) → cancel(): copies a→b and b→a on a thread of its own (a
// connection may stay open for days: never the thread pool) until both directions have ended.
// Both fds are duplicated (the caller closes its own at once). `head` (a Buffer, may be empty) is
// written to b first (the PROXY line). Half-close as TCP: a side's EOF becomes a shutdown(SHUT_WR)
// of the other once what it sent is through; an error on either side ends both. onEnd(error)
// is called once from the event loop at the end (error: "" or what failed); cancel() ends both
// sides at once (onEnd is still called).
Napi::Value SpliceStreams(const Napi::CallbackInfo& info);

}  // namespace lxq
