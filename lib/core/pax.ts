/**
 * A small tar reader and writer of lxq's own (no dependency, no tar process), for directory trees
 * streamed in and out of instances. It writes POSIX pax (ustar headers, a pax extended header
 * when a name, link target, id or size does not fit) and reads pax, ustar and GNU tar (long
 * names as 'L'/'K' members, base-256 numbers).
 *
 * Archives read here come from elsewhere and are hostile: every header's checksum is checked, a
 * stream that ends inside a member or before the end-of-archive blocks is truncated, and extended
 * headers are bounded. What a member's name means (absolute, "..", under a symlink) is for the
 * caller to judge (lib/core/tar.ts checkMembers).
 */
import { InvalidArgument } from './errors';

/** What a tar member is. */
export type TarType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'character' | 'block' | 'fifo' | 'other';

/** One member's header. */
export interface TarHeader {
  name: string;
  type: TarType;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** Bytes of content that follow (0 but for files). */
  size: number;
  /** A symlink's target or a hard link's member. */
  linkname?: string;
}

const BLOCK = 512;
/** Bounds on what an archive makes lxq hold in memory: an extended header, a name. */
const MAX_EXTENDED = 1024 * 1024;
const MAX_NAME = 4096;

const TYPES: Record<string, TarType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'character',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};
const FLAGS: Partial<Record<TarType, string>> = { file: '0', hardlink: '1', symlink: '2', directory: '5' };

// ---- writing ----

function octal(buf: Buffer, value: number, offset: number, length: number): void {
  buf.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'ascii');
}

function field(buf: Buffer, text: string, offset: number, length: number): void {
  Buffer.from(text, 'utf8').copy(buf, offset, 0, length);
}

function block(h: TarHeader, name: string, flag: string, size: number, linkname = ''): Buffer {
  const b = Buffer.alloc(BLOCK);
  field(b, name, 0, 100);
  octal(b, h.mode & 0o7777, 100, 8);
  octal(b, Math.min(h.uid, 0o7777777), 108, 8);
  octal(b, Math.min(h.gid, 0o7777777), 116, 8);
  octal(b, size, 124, 12);
  octal(b, Math.max(0, Math.min(Math.floor(h.mtime.getTime() / 1000), 0o77777777777)), 136, 12);
  b.fill(0x20, 148, 156);
  b.write(flag, 156, 1, 'ascii');
  field(b, linkname, 157, 100);
  b.write('ustar\u000000', 257, 8, 'ascii');
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return b;
}

/** A pax record: "LEN key=value\n", LEN counting itself. */
function record(key: string, value: string): string {
  const rest = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(rest);
  while (String(len).length + Buffer.byteLength(rest) !== len) len = String(len).length + Buffer.byteLength(rest);
  return `${len}${rest}`;
}

/** Zeros up to the next block boundary after `size` bytes. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/** The header block(s) of a member: a pax extended header first when a field does not fit ustar. */
export function tarHeader(h: TarHeader): Buffer {
  const flag = FLAGS[h.type];
  if (!flag) throw new InvalidArgument(`lxq does not write tar members of type ${h.type}`);
  const size = h.type === 'file' ? h.size : 0;
  const records: string[] = [];
  if (Buffer.byteLength(h.name) > 100) records.push(record('path', h.name));
  if (h.linkname !== undefined && Buffer.byteLength(h.linkname) > 100) records.push(record('linkpath', h.linkname));
  if (h.uid > 0o7777777) records.push(record('uid', String(h.uid)));
  if (h.gid > 0o7777777) records.push(record('gid', String(h.gid)));
  if (size > 0o77777777777) records.push(record('size', String(size)));
  const main = block(h, h.name, flag, Math.min(size, 0o77777777777), h.linkname);
  if (!records.length) return main;
  const body = Buffer.from(records.join(''), 'utf8');
  const ext = block({ ...h, mode: 0o644 }, `PaxHeaders/${h.name.split('/').pop()!.slice(0, 80)}`, 'x', body.length);
  return Buffer.concat([ext, body, tarPadding(body.length), main]);
}

// ---- reading ----

/** Pulls exact byte counts out of a stream of chunks. */
class Chunks {
  private parts: Buffer[] = [];
  private length = 0;
  private ended = false;

  constructor(private readonly source: AsyncIterator<Buffer | string>) {}

  /** Whether `n` bytes are buffered (false only at the end of the stream). */
  async have(n: number): Promise<boolean> {
    while (this.length < n && !this.ended) {
      const next = await this.source.next();
      if (next.done) this.ended = true;
      else {
        const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
        if (!Buffer.isBuffer(chunk)) throw new InvalidArgument('a tar stream must yield Buffers');
        this.parts.push(chunk);
        this.length += chunk.length;
      }
    }
    return this.length >= n;
  }

  /** Up to `n` buffered bytes (at least one if any is buffered). */
  take(n: number): Buffer {
    const first = this.parts[0];
    const out = first.length <= n ? this.parts.shift()! : first.subarray(0, n);
    if (out !== first) this.parts[0] = first.subarray(n);
    this.length -= out.length;
    return out;
  }

  async exactly(n: number, what: () => string): Promise<Buffer> {
    if (!(await this.have(n))) throw truncated(what());
    const out: Buffer[] = [];
    for (let left = n; left > 0; ) {
      const b = this.take(left);
      out.push(b);
      left -= b.length;
    }
    return Buffer.concat(out, n);
  }
}

function truncated(where: string): InvalidArgument {
  return new InvalidArgument(`the tar stream is truncated or corrupt: it ends ${where}`);
}

function corrupt(why: string): InvalidArgument {
  return new InvalidArgument(`the tar stream is corrupt: ${why}`);
}

function text(b: Buffer, offset: number, length: number): string {
  const f = b.subarray(offset, offset + length);
  const end = f.indexOf(0);
  return f.subarray(0, end < 0 ? length : end).toString('utf8');
}

/** An octal field (spaces and NULs around it), or GNU base-256 when the high bit is set. */
function number(b: Buffer, offset: number, length: number, name: string): number {
  const f = b.subarray(offset, offset + length);
  if (f[0] & 0x80) {
    if (f[0] & 0x40) throw corrupt(`member ${JSON.stringify(name)} has a negative number in its header`);
    let v = f[0] & 0x3f;
    for (let i = 1; i < length; i++) v = v * 256 + f[i];
    if (!Number.isSafeInteger(v)) throw corrupt(`member ${JSON.stringify(name)} has a number too large in its header`);
    return v;
  }
  const s = f.toString('ascii').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw corrupt(`member ${JSON.stringify(name)} has ${JSON.stringify(s)} where its header wants an octal number`);
  return parseInt(s, 8);
}

function checksumOk(b: Buffer): boolean {
  const field = b.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]+$/.test(field)) return false;
  const want = parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  return want === unsigned || want === signed;
}

/** Pax records into a map; refuses malformed ones. */
function paxRecords(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  for (let at = 0; at < body.length; ) {
    const space = body.indexOf(0x20, at);
    const len = Number(body.subarray(at, space).toString('ascii'));
    if (space < 0 || !Number.isInteger(len) || len <= 0 || at + len > body.length || body[at + len - 1] !== 0x0a) {
      if (body.subarray(at).every((c) => c === 0)) break;
      throw corrupt('a pax extended header has a malformed record');
    }
    const rec = body.subarray(space + 1, at + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq <= 0) throw corrupt('a pax extended header has a record without a key');
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    at += len;
  }
  return out;
}

function paxNumber(v: string, key: string): number {
  if (!/^\d+(\.\d+)?$/.test(v) || !Number.isSafeInteger(Math.floor(Number(v)))) throw corrupt(`a pax ${key} of ${JSON.stringify(v.slice(0, 40))} is not a number`);
  return Number(v);
}

/** Long names and pax values waiting for the next real member. */
interface Pending {
  pax: Map<string, string>;
  longName?: string;
  longLink?: string;
}

function applyPending(h: TarHeader, p: Pending): TarHeader {
  const out = { ...h };
  if (p.longName !== undefined) out.name = p.longName;
  if (p.longLink !== undefined) out.linkname = p.longLink;
  const pax = p.pax;
  if (pax.has('path')) out.name = pax.get('path')!;
  if (pax.has('linkpath')) out.linkname = pax.get('linkpath')!;
  if (pax.has('size')) out.size = paxNumber(pax.get('size')!, 'size');
  if (pax.has('uid')) out.uid = paxNumber(pax.get('uid')!, 'uid');
  if (pax.has('gid')) out.gid = paxNumber(pax.get('gid')!, 'gid');
  if (pax.has('mtime')) out.mtime = new Date(paxNumber(pax.get('mtime')!, 'mtime') * 1000);
  if (Buffer.byteLength(out.name) > MAX_NAME || Buffer.byteLength(out.linkname ?? '') > MAX_NAME) throw corrupt(`a member's name or link target is longer than ${MAX_NAME} bytes`);
  return out;
}

function parseHeader(b: Buffer): { header: TarHeader; flag: string } {
  const rawName = text(b, 0, 100);
  if (!checksumOk(b)) throw corrupt(`the header of member ${JSON.stringify(rawName.slice(0, 100))} has a wrong checksum (not a tar stream, or a member's size is wrong)`);
  const flag = String.fromCharCode(b[156]);
  const posix = b.subarray(257, 263).toString('latin1') === 'ustar\0';
  const prefix = posix ? text(b, 345, 155) : '';
  const name = prefix ? `${prefix}/${rawName}` : rawName;
  const header: TarHeader = {
    name,
    type: TYPES[flag] ?? 'other',
    mode: number(b, 100, 8, name) & 0o7777,
    uid: number(b, 108, 8, name),
    gid: number(b, 116, 8, name),
    size: number(b, 124, 12, name),
    mtime: new Date(number(b, 136, 12, name) * 1000),
  };
  const link = text(b, 157, 100);
  if (link) header.linkname = link;
  return { header, flag };
}

/**
 * The members of a tar stream, in order. Each member's content (`size` bytes) is handed to
 * `content` as chunks before the next member is read; the promise resolves at the end-of-archive
 * blocks. InvalidArgument for anything truncated, corrupt or unbounded.
 */
export async function readTar(source: AsyncIterable<Buffer | string>, onMember: (h: TarHeader) => Promise<void> | void, content: (h: TarHeader, chunk: Buffer) => Promise<void> | void): Promise<void> {
  const input = new Chunks(source[Symbol.asyncIterator]());
  let pending: Pending = { pax: new Map() };
  let last = 'at its start';
  for (;;) {
    const b = await input.exactly(BLOCK, () => `${last}, before the end-of-archive blocks`);
    if (b.every((c) => c === 0)) return;
    const { header: raw, flag } = parseHeader(b);
    const h = applyPending(raw, pending);
    const where = () => `inside member ${JSON.stringify(h.name)}`;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (h.size > MAX_EXTENDED) throw corrupt(`an extended header of ${h.size} bytes is larger than lxq reads (${MAX_EXTENDED})`);
      const body = (await input.exactly(h.size + tarPadding(h.size).length, where)).subarray(0, h.size);
      if (flag === 'x') pending = { ...pending, pax: new Map([...pending.pax, ...paxRecords(body)]) };
      else if (flag === 'L') pending = { ...pending, longName: text(body, 0, body.length) };
      else if (flag === 'K') pending = { ...pending, longLink: text(body, 0, body.length) };
      else paxRecords(body); // global records (git archive's comment) are checked and not applied
      continue;
    }
    pending = { pax: new Map() };
    await onMember(h);
    for (let left = h.size; left > 0; ) {
      if (!(await input.have(1))) throw truncated(where());
      const chunk = input.take(left);
      left -= chunk.length;
      await content(h, chunk);
    }
    await input.exactly(tarPadding(h.size).length, where);
    last = `after member ${JSON.stringify(h.name)}`;
  }
}
