import { promises as fs } from 'node:fs';

/** True if the ELF file has no program interpreter (statically linked). */
export async function isStaticElf(file: string): Promise<boolean> {
  const h = await fs.open(file, 'r');
  try {
    const hdr = Buffer.alloc(64);
    await h.read(hdr, 0, 64, 0);
    if (hdr.readUInt32BE(0) !== 0x7f454c46 || hdr[4] !== 2) return false; // ELF64 only
    const phoff = Number(hdr.readBigUInt64LE(0x20));
    const phentsize = hdr.readUInt16LE(0x36);
    const phnum = hdr.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    await h.read(ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } finally {
    await h.close();
  }
}
