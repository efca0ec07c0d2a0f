/**
 * The kernel as an ELF with a PVH entry point, taken out of Debian's bzImage: QEMU then boots it
 * directly, without the real-mode setup and the self-decompression.
 */
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { gunzip as gunzipCb } from 'node:zlib';

import { spawnHelper } from '../core/run';

const gunzip = promisify(gunzipCb);

/**
 * The ELF `vmlinux` inside a bzImage, if QEMU can boot it directly through its PVH entry point
 * (a Xen ELF note of type XEN_ELFNOTE_PHYS32_ENTRY): this skips the firmware's real-mode kernel
 * setup and the kernel's self-decompression, about 0.5 s of a TCG boot. Returns the reason when
 * it cannot (the caller then boots the bzImage).
 */
export async function extractPvhKernel(bz: Buffer): Promise<{ elf: Buffer } | { reason: string }> {
  if (bz.length < 0x260 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS') return { reason: 'not a bzImage' };
  if (bz.readUInt16LE(0x206) < 0x208) return { reason: 'boot protocol older than 2.08 (no payload fields)' };
  const setupSects = bz[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  if (payload.length < 16 || start + payload.length > bz.length) return { reason: 'bad payload bounds' };
  // The build appends the uncompressed length (le32) to every compressed payload.
  const outLen = payload.readUInt32LE(payload.length - 4);
  if (outLen < 1024 * 1024 || outLen > 512 * 1024 * 1024) return { reason: `implausible vmlinux size ${outLen}` };
  let elf: Buffer;
  try {
    const magic = payload.subarray(0, 6).toString('hex');
    if (magic.startsWith('02214c18')) elf = await lz4LegacyDecompress(payload, outLen);
    else if (magic.startsWith('1f8b')) elf = await gunzip(payload);
    else if (magic === 'fd377a585a00') elf = await pipeThrough('xz', ['-dc', '--single-stream'], payload);
    else if (magic.startsWith('28b52ffd')) elf = await pipeThrough('zstd', ['-dc'], payload);
    else return { reason: `unsupported kernel compression (payload starts with ${magic})` };
  } catch (e) {
    return { reason: `cannot decompress the kernel: ${(e as Error).message}` };
  }
  if (elf.length !== outLen) return { reason: `decompressed ${elf.length} bytes, expected ${outLen}` };
  if (!hasPvhNote(elf)) return { reason: 'the kernel has no PVH entry point (CONFIG_PVH)' };
  return { elf };
}

/** True for an x86-64 ELF with a Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY). */
function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf.readUInt16LE(0x12) !== 0x3e) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let off = Number(elf.readBigUInt64LE(ph + 8));
    const end = off + Number(elf.readBigUInt64LE(ph + 32));
    while (off + 12 <= end && end <= elf.length) {
      const namesz = elf.readUInt32LE(off);
      const descsz = elf.readUInt32LE(off + 4);
      const type = elf.readUInt32LE(off + 8);
      const name = elf.toString('latin1', off + 12, off + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === 18) return true;
      off += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Runs `cmd` with `input` on stdin; its stdout, if it looks complete even when it complains. */
function pipeThrough(cmd: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawnHelper(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] }) as ChildProcessByStdio<Writable, Readable, null>;
    const out: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stdin.on('error', () => undefined); // the tool may stop reading at the trailing length word
    p.once('error', reject);
    p.once('close', () => resolve(Buffer.concat(out)));
    p.stdin.end(input);
  });
}

/** LZ4 "legacy" frames (what `lz4 -l` and the kernel build make), decoded on a worker thread. */
const LZ4_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const src = new Uint8Array(workerData.src);
const out = new Uint8Array(workerData.outLen);
const MAGIC = 0x184c2102;
const u32 = (i) => (src[i] | (src[i + 1] << 8) | (src[i + 2] << 16) | (src[i + 3] << 24)) >>> 0;
let ip = 4, op = 0, err = null;
try {
  if (u32(0) !== MAGIC) throw new Error('not an LZ4 legacy frame');
  while (ip + 4 <= src.length) {
    const size = u32(ip);
    if (size === MAGIC) { ip += 4; continue; }
    if (ip + 4 + size > src.length) break; // the trailing length word
    ip += 4;
    const end = ip + size;
    while (ip < end) {
      const token = src[ip++];
      let lit = token >>> 4;
      if (lit === 15) { let b; do { b = src[ip++]; lit += b; } while (b === 255); }
      if (op + lit > out.length || ip + lit > end) throw new Error('corrupt LZ4 literals');
      out.set(src.subarray(ip, ip + lit), op); ip += lit; op += lit;
      if (ip >= end) break;
      const off = src[ip] | (src[ip + 1] << 8); ip += 2;
      let len = token & 15;
      if (len === 15) { let b; do { b = src[ip++]; len += b; } while (b === 255); }
      len += 4;
      if (off === 0 || off > op || op + len > out.length) throw new Error('corrupt LZ4 match');
      if (off >= len) { out.copyWithin(op, op - off, op - off + len); op += len; }
      else { for (let i = 0; i < len; i++, op++) out[op] = out[op - off]; }
    }
  }
} catch (e) { err = String((e && e.message) || e); }
parentPort.postMessage({ err, len: op, out: out.buffer }, [out.buffer]);
`;

function lz4LegacyDecompress(src: Buffer, outLen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const copy = new Uint8Array(src.length);
    copy.set(src);
    const w = new Worker(LZ4_WORKER, { eval: true, workerData: { src: copy.buffer, outLen }, transferList: [copy.buffer] });
    let done = false;
    w.once('message', (m: { err: string | null; len: number; out: ArrayBuffer }) => {
      done = true;
      if (m.err) reject(new Error(m.err));
      else resolve(Buffer.from(m.out, 0, m.len));
    });
    w.once('error', (e) => {
      done = true;
      reject(e);
    });
    w.once('exit', (code) => {
      if (!done) reject(new Error(`the LZ4 worker exited with code ${code}`));
    });
  });
}
