/**
 * Interactive consoles, shared by both drivers. A driver opens its console once (the container's
 * /dev/console through liblxc's proxy pty, the VM's serial port through a QEMU chardev socket),
 * which both liblxc and QEMU hand to one client at a time; the hub fans that one endpoint out to
 * every stream attached in this process, so several readers can watch and type at once.
 */
import { Duplex } from 'node:stream';

/** A console as a driver opens it. */
export interface ConsoleEndpoint {
  stream: Duplex;
  /** Sets the console's window size; absent where there is none (a serial port). */
  resize?(cols: number, rows: number): Promise<void>;
}

/**
 * An attached console: bytes from the console are read, bytes written are typed into it.
 *
 * @example
 * ```ts
 * const s = await c.console.attach();
 * s.write('\n'); // Enter starts the console's shell
 * s.on('data', (d) => process.stdout.write(d));
 * await s.resize(120, 40); // containers only
 * ```
 */
export interface ConsoleStream extends Duplex {
  /** Sets the console's window size (containers); NotSupported on a VM's serial port. */
  resize(cols: number, rows: number): Promise<void>;
  /** Output dropped for this reader because it fell behind by more than its buffer. */
  readonly dropped: number;
}

/** Output kept for a reader that does not read; beyond it, chunks are dropped and counted. */
const READER_BUFFER_BYTES = 4 * 1024 * 1024;

class AttachedConsole extends Duplex implements ConsoleStream {
  dropped = 0;
  constructor(
    private readonly hub: ConsoleHub,
    private readonly endpoint: ConsoleEndpoint,
  ) {
    super({ allowHalfOpen: false });
  }
  override _read(): void {
    // Output is pushed by the hub as the console produces it.
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (e?: Error | null) => void): void {
    if (this.endpoint.stream.destroyed) return done(new Error('the console is closed'));
    this.endpoint.stream.write(chunk, done);
  }
  override _final(done: () => void): void {
    this.hub.detach(this);
    done();
  }
  override _destroy(e: Error | null, done: (e: Error | null) => void): void {
    this.hub.detach(this);
    done(e);
  }
  deliver(chunk: Buffer): void {
    if (this.readableLength > READER_BUFFER_BYTES) this.dropped += chunk.length;
    else this.push(chunk);
  }
  resize(cols: number, rows: number): Promise<void> {
    return this.hub.resize(cols, rows);
  }
}

/** One instance's console in this process: opened on the first attach, closed after the last. */
export class ConsoleHub {
  private endpoint: Promise<ConsoleEndpoint> | undefined;
  private readonly readers = new Set<AttachedConsole>();

  /**
   * `open` checks the instance's state (a typed error if it cannot have a console) and opens the
   * driver's endpoint; `unsupportedResize` is the error for a console without a window size.
   */
  constructor(
    private readonly open: () => Promise<ConsoleEndpoint>,
    private readonly unsupportedResize: () => Error,
  ) {}

  async attach(): Promise<ConsoleStream> {
    const opening = (this.endpoint ??= this.open().then((endpoint) => this.wire(endpoint)));
    let endpoint: ConsoleEndpoint;
    try {
      endpoint = await opening;
    } catch (e) {
      if (this.endpoint === opening) this.endpoint = undefined;
      throw e;
    }
    const reader = new AttachedConsole(this, endpoint);
    this.readers.add(reader);
    return reader;
  }

  detach(reader: AttachedConsole): void {
    if (!this.readers.delete(reader) || this.readers.size) return;
    const opened = this.endpoint;
    this.endpoint = undefined;
    void opened?.then((e) => e.stream.destroy(), () => undefined);
  }

  async resize(cols: number, rows: number): Promise<void> {
    const endpoint = await this.endpoint;
    if (!endpoint) throw new Error('the console is closed');
    if (!endpoint.resize) throw this.unsupportedResize();
    await endpoint.resize(cols, rows);
  }

  private wire(endpoint: ConsoleEndpoint): ConsoleEndpoint {
    const { stream } = endpoint;
    stream.on('data', (chunk: Buffer) => {
      for (const r of this.readers) r.deliver(chunk);
    });
    const closed = () => {
      this.endpoint = undefined;
      for (const r of [...this.readers]) {
        this.readers.delete(r);
        r.push(null);
      }
    };
    stream.once('end', closed);
    stream.once('close', closed);
    // An error ends the console (the instance stopped); readers see the end, not the error.
    stream.on('error', () => stream.destroy());
    return endpoint;
  }
}
