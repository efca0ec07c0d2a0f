/* A udp echo server for the udp proxy tests: neither busybox image has one. It answers each
 * datagram with "echo:" and the datagram, to its sender. Built static, so it runs in any rootfs.
 * Usage: udp-echo ADDRESS PORT (daemonizes once bound, so the caller knows it listens). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) return 2;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0) return perror("bind"), 1;
  if (daemon(0, 0) != 0) return 1;
  char buf[65536];
  memcpy(buf, "echo:", 5);
  for (;;) {
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf + 5, sizeof buf - 5, 0, (struct sockaddr*)&from, &len);
    if (n >= 0) sendto(fd, buf, (size_t)n + 5, 0, (struct sockaddr*)&from, len);
  }
}
