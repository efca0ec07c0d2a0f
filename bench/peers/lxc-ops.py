# python3-lxc peer of the container benchmark: the cycle of lxc-ops.c through Debian's binding.
# Usage: /usr/bin/python3 lxc-ops.py SOURCE NAME LXCPATH N
#   create (clone of the stopped SOURCE), start (daemonized), N x state, N x exec /bin/true,
#   N x freeze + unfreeze, stop (forced), start, 200 ms pause, stop (graceful), delete.
# Prints "op ms" per operation (bench/peers/peer.ts); only the binding's call is timed.
import os
import sys
import time

import lxc


def timed(op, fn):
    t = time.perf_counter()
    ok = fn()
    ms = (time.perf_counter() - t) * 1e3
    if not ok:
        sys.exit("lxc-ops.py: %s failed" % op)
    print("%s %.4f" % (op, ms))


def exec_true(c):
    # As lxc-ops.c: stdin, stdout and stderr on pipes, output read to EOF, exit status reaped.
    # The binding takes them as attach options (any object with fileno(), or an fd); attach_wait
    # returns after waitpid, so the ends it handed over are closed before the pipes are drained.
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        status = c.attach_wait(lxc.attach_run_command, ["/bin/true"], env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                               stdin=in_r, stdout=out_w, stderr=err_w)
    finally:
        for fd in (in_r, in_w, out_w, err_w):
            os.close(fd)
    while os.read(out_r, 256):
        pass
    while os.read(err_r, 256):
        pass
    os.close(out_r)
    os.close(err_r)
    return status == 0  # attach_wait returns the raw wait status (or -1)


def main():
    source, name, lxcpath, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    src = lxc.Container(source, lxcpath)
    box = {}

    def clone():
        box["c"] = src.clone(name, config_path=lxcpath)
        return bool(box["c"])

    timed("create", clone)
    c = box["c"]
    # The binding's start() sets liblxc's want_daemonize/want_close_all_fds itself on each call
    # (defaults: daemonized, fds kept): ask for what lxc-ops.c sets.
    start = lambda: c.start(daemonize=True, close_fds=True)

    timed("start", start)
    for _ in range(n):
        timed("state", lambda: c.state == "RUNNING")
    for _ in range(n):
        timed("exec", lambda: exec_true(c))
    for _ in range(n):
        timed("freeze", c.freeze)
        timed("unfreeze", c.unfreeze)
    timed("stop-force", c.stop)
    timed("start", start)
    time.sleep(0.2)  # busybox init drops a halt signal that comes before its handlers
    timed("stop-graceful", lambda: c.shutdown(30))
    timed("delete", c.destroy)


if __name__ == "__main__":
    main()
