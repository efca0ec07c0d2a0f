// One file descriptor watched for readability on Node's event loop (libuv's uv_poll), owned by
// the watch: closed with it. What pidwatch.cc (a pidfd) and uevent.cc (a netlink socket) share:
// the poll's set-up, a JS callback called in its async context, and a cancel function that may
// outlive the watch (or be collected first).
#pragma once

#include <napi.h>

#include <string>

namespace lxq {

struct FdWatch;

// Called from the event loop when the fd is readable, a HandleScope open.
using OnFdReadable = void (*)(Napi::Env env, FdWatch* watch);

// Watches `fd` (taken over: closed on failure too) and returns cancel(). `what` names the watch
// in a failure's message; `keepAlive`: whether it keeps the event loop alive until cancelled.
Napi::Function WatchFd(Napi::Env env, int fd, Napi::Function callback, const char* resource, OnFdReadable onReadable, bool keepAlive, const std::string& what);

// The watched fd, and whether the watch was closed (by cancel() or CloseFdWatch).
int WatchedFd(const FdWatch* watch);
bool FdWatchClosed(const FdWatch* watch);

// Calls the watch's callback with `args` (in its async context).
void CallFdWatch(FdWatch* watch, const std::initializer_list<napi_value>& args);

// Stops and closes the watch; its fd is closed and its memory freed on the loop's next turn (so
// a callback may still be called after this, from within the same OnFdReadable).
void CloseFdWatch(FdWatch* watch);

// An Error for a failed system call: "<what>: <strerror>", with errno and code set.
Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err);

}  // namespace lxq
