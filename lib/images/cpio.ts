/** A cpio archive in the "newc" format the kernel unpacks as its initramfs. */

/** A cpio archive in the "newc" format the kernel unpacks, built in memory (owner root). */
export class CpioWriter {
  private readonly chunks: Buffer[] = [];
  private ino = 1;
  private readonly mtime = Math.floor(Date.now() / 1000);

  dir(name: string, mode: number): void {
    this.entry(name, 0o040000 | mode, Buffer.alloc(0), 2);
  }

  file(name: string, mode: number, data: Buffer): void {
    this.entry(name, 0o100000 | mode, data);
  }

  symlink(name: string, target: string): void {
    this.entry(name, 0o120000 | 0o777, Buffer.from(target));
  }

  dev(name: string, mode: number, major: number, minor: number): void {
    this.entry(name, 0o020000 | mode, Buffer.alloc(0), 1, major, minor);
  }

  finish(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0), 1, 0, 0, 0);
    return Buffer.concat(this.chunks);
  }

  private entry(name: string, mode: number, data: Buffer, nlink = 1, rmajor = 0, rminor = 0, ino = this.ino++): void {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [ino, mode, 0, 0, nlink, name === 'TRAILER!!!' ? 0 : this.mtime, data.length, 0, 0, rmajor, rminor, nameBuf.length, 0];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii');
    this.chunks.push(header, nameBuf, pad4(header.length + nameBuf.length), data, pad4(data.length));
  }
}


function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}
