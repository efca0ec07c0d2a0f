# python3-lxc: freeze + unfreeze N times; "freeze_ms unfreeze_ms" per line.
import sys, time, lxc
c = lxc.Container(sys.argv[1], sys.argv[2])
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); c.freeze(); f = (time.perf_counter() - t) * 1e3
    t = time.perf_counter(); c.unfreeze(); u = (time.perf_counter() - t) * 1e3
    print("%.4f %.4f" % (f, u))
