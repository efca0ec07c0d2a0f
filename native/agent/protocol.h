// The lxq agent's wire format (PROTOCOL.md beside this file): frames of a 12-byte header
// (u32 length, u32 channel, u8 type, 3 zero bytes; big-endian) and a payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lxq::agent {

// 2: file operations, the guest's state, interface settings (REQUEST, DATA, RESULT).
constexpr uint16_t kVersion = 2;
constexpr size_t kHeaderSize = 12;
// The largest payload either side accepts; an EXEC (argv + environment) is the largest frame.
constexpr uint32_t kMaxPayload = 256 * 1024;
// The largest STDIN/STDOUT/STDERR payload: small enough that one command's output does not hold
// the port long, large enough that a frame's header is noise.
constexpr uint32_t kMaxData = 32 * 1024;
// Bytes a stream may have in flight without an ACK.
constexpr uint32_t kWindow = 256 * 1024;
constexpr char kMagic[8] = {'L', 'X', 'Q', 'A', 'G', 'E', 'N', 'T'};
constexpr size_t kHostHelloSize = 24;
constexpr size_t kAgentHelloSize = 28;

enum Type : uint8_t {
  kHello = 1,
  kPing = 2,
  kPong = 3,
  kError = 4,
  kExec = 16,
  kStarted = 17,
  kStdin = 18,
  kStdout = 19,
  kStderr = 20,
  kAck = 21,
  kSignal = 22,
  kResize = 23,
  kExit = 24,
  kRequest = 32,
  kData = 33,
  kResult = 34,
  kCancel = 35,
};

// What a REQUEST asks (PROTOCOL.md, "Files and state").
enum Op : uint32_t {
  kOpStat = 1,
  kOpList = 2,
  kOpRead = 3,
  kOpWrite = 4,
  kOpMkdir = 5,
  kOpRemove = 6,
  kOpSymlink = 7,
  kOpReadlink = 8,
  kOpState = 9,
  kOpNic = 10,
  kOpUtimes = 11,
  kOpIdentity = 12,
};

enum Stream : uint8_t { kStreamStdin = 0, kStreamStdout = 1, kStreamStderr = 2 };

inline void PutU16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}
inline void PutU32(std::string& s, uint32_t v) {
  PutU16(s, static_cast<uint16_t>(v >> 16));
  PutU16(s, static_cast<uint16_t>(v));
}
inline uint16_t GetU16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t GetU32(const unsigned char* p) { return static_cast<uint32_t>(GetU16(p)) << 16 | GetU16(p + 2); }
inline void PutU64(std::string& s, uint64_t v) {
  PutU32(s, static_cast<uint32_t>(v >> 32));
  PutU32(s, static_cast<uint32_t>(v));
}

// Appends one frame to `out`.
inline void PutFrame(std::string& out, Type type, uint32_t channel, const char* payload, size_t length) {
  PutU32(out, static_cast<uint32_t>(length));
  PutU32(out, channel);
  out.push_back(static_cast<char>(type));
  out.append(3, '\0');
  out.append(payload, length);
}
inline void PutFrame(std::string& out, Type type, uint32_t channel, const std::string& payload = {}) {
  PutFrame(out, type, channel, payload.data(), payload.size());
}

}  // namespace lxq::agent
