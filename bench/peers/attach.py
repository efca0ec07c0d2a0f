# python3-lxc: attach_wait of /bin/true, N times; one duration in ms per line.
import sys, time, lxc
c = lxc.Container(sys.argv[1], sys.argv[2])
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    c.attach_wait(lxc.attach_run_command, ["/bin/true"], env_policy=lxc.LXC_ATTACH_CLEAR_ENV)
    print("%.4f" % ((time.perf_counter() - t) * 1e3))
