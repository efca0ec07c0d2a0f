/**
 * A client for LXD's REST API 1.0 (also Incus's), over its unix socket or over HTTPS with a
 * client certificate and the server's certificate pinned. Node's http/https with a keep-alive
 * agent; every request has a timeout; asynchronous operations are waited on
 * (GET /1.0/operations/<id>/wait); the server's errors become lxq's typed errors with the
 * server's own message and status kept (`LxdRequestError` details).
 */
import { X509Certificate } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';

import { currentSignal, wantsProgress } from '../../core/abort';
import { waitWatched } from './operation';
import { Aborted, AlreadyExists, Busy, InvalidArgument, InvalidState, LxqError, NotFound, NotSupported, OperationFailed, PermissionDenied, Timeout } from '../../core/errors';

/**
 * Debian's LXD socket, /var/lib/lxd/unix.socket: where `Host.connect()` looks by default.
 *
 * @example
 * ```ts
 * new LxdClient({ socket: DEFAULT_SOCKET });
 * ```
 */
export const DEFAULT_SOCKET = '/var/lib/lxd/unix.socket';

/**
 * Where an LXD server listens and how to authenticate: a unix socket, or HTTPS with a client certificate and the pinned server certificate.
 *
 * @example
 * ```ts
 * new LxdClient({ url: 'https://lxd.lan:8443', cert, key, serverCert, timeoutMs: 10_000 });
 * ```
 */
export interface LxdEndpoint {
  /** The server's unix socket (default /var/lib/lxd/unix.socket). */
  socket?: string;
  /** `https://host:8443`: then `cert`/`key` (PEM) authenticate us and `serverCert` (PEM) is the only certificate accepted. */
  url?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
  serverCert?: string | Buffer;
  /** The LXD project every instance request is made in (default: the server's `default`). */
  project?: string;
  /** Per-request timeout, ms (default 30 s); operation waits get their own. */
  timeoutMs?: number;
}

/**
 * LXD's response envelope: sync, async (an operation) or error, with its metadata.
 *
 * @example
 * ```ts
 * const r: LxdResponse = await client.request('GET', '/1.0/instances');
 * console.log(r.status_code, r.metadata);
 * ```
 */
export interface LxdResponse {
  type: 'sync' | 'async' | 'error';
  status_code: number;
  error_code?: number;
  error?: string;
  operation?: string;
  metadata: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  /** The ETag header, for an If-Match on the following update. */
  etag?: string;
}

/**
 * Per-request options of `LxdClient.request`: a streamed or raw body, headers, a timeout, an ETag.
 *
 * @example
 * ```ts
 * await client.request('POST', '/1.0/images', undefined, { stream: './image.tar.gz', timeoutMs: 300_000 });
 * ```
 */
export interface RequestOptions {
  /** A file streamed as the body (application/octet-stream), e.g. an image tarball. */
  stream?: string;
  /** Called with the bytes of `stream` sent so far. */
  onSent?: (bytes: number) => void;
  /** Cuts the request short (the connection closed: the server sees a broken body); rejects with Aborted. */
  signal?: AbortSignal;
  /** A raw body (application/octet-stream), e.g. a file pushed through the files API. */
  raw?: Buffer;
  headers?: http.OutgoingHttpHeaders;
  timeoutMs?: number;
  /** Send If-Match: the server refuses the update (412) if the object changed since. */
  etag?: string;
  /** Return the body as it is (files API) instead of parsing LXD's JSON envelope. */
  binary?: boolean;
}

/**
 * What the server said, attached to the typed error made from it.
 *
 * @example
 * ```ts
 * catch (err) { console.log((err as { lxd?: LxdErrorDetails }).lxd?.serverMessage); }
 * ```
 */
export interface LxdErrorDetails {
  method: string;
  path: string;
  /** HTTP status or LXD's error_code / operation status_code. */
  status: number;
  /** The server's own message. */
  serverMessage: string;
  /** A background operation failed (its status 400 means "Failure", not a bad request). */
  operation?: boolean;
}

/**
 * Maps an LXD failure to lxq's error types; the message keeps the server's words.
 *
 * @example
 * ```ts
 * throw lxdError({ method: 'GET', path: '/1.0/instances/x', status: 404, serverMessage: 'Instance not found' }); // a NotFound
 * ```
 */
export function lxdError(d: LxdErrorDetails): LxqError {
  const msg = `LXD ${d.method} ${d.path}: ${d.serverMessage} (${d.status})`;
  const m = d.serverMessage.toLowerCase();
  let e: LxqError;
  if (d.status === 403) e = new PermissionDenied(msg);
  else if (d.status === 404 || /\bnot found\b/.test(m)) e = new NotFound(msg);
  else if (d.status === 409 || /already exists/.test(m)) e = new AlreadyExists(msg);
  else if (d.status === 412) e = new InvalidState(msg);
  else if (LXD_BUSY.test(d.serverMessage) || /\b(is|are) (still |currently )?in use\b/.test(m)) e = new Busy(msg);
  // The instance's state refuses it, whether LXD says so at once (400) or in the operation.
  else if (/already (running|stopped|frozen)|\bis (not )?running|isn't running|not frozen|is frozen/.test(m)) e = new InvalidState(msg);
  else if (d.status === 400 && !d.operation && /not supported|isn't supported|unsupported|no .* support|cannot run|virtuali[sz]ation/.test(m)) e = new NotSupported(msg);
  else if (d.status === 400 && !d.operation) e = new InvalidArgument(msg);
  else if (/not supported|unsupported|cannot run|virtuali[sz]ation|kvm/.test(m)) e = new NotSupported(msg);
  // What LXD answers with a 500 though the request was at fault.
  else if (/\binvalid (option|value|config)/.test(m)) e = new InvalidArgument(msg);
  else e = new OperationFailed(msg, { call: `${d.method} ${d.path}` });
  Object.assign(e, { lxd: d });
  return e;
}

/** LXD's JSON envelope of an answer, or its error (or a body that is not JSON) typed. */
function envelope(method: string, path: string, status: number, buf: Buffer): LxdResponse | LxqError {
  let r: LxdResponse;
  try {
    r = JSON.parse(buf.toString('utf8'));
  } catch {
    return lxdError({ method, path, status, serverMessage: `HTTP ${status}, not JSON: ${buf.toString('utf8').slice(0, 200)}` });
  }
  if (r.type === 'error' || status >= 400) return lxdError({ method, path, status: r.error_code ?? status, serverMessage: r.error ?? `HTTP ${status}` });
  return r;
}

/** The error of an answer whose HTTP status is one. */
function envelopeError(method: string, path: string, status: number, buf: Buffer): LxqError {
  const r = envelope(method, path, status, buf);
  return r instanceof LxqError ? r : lxdError({ method, path, status, serverMessage: `HTTP ${status}` });
}

/**
 * LXD's refusal while another action holds the instance's operation lock. LXD keeps that lock past the
 * end of a stop it has already reported (until its clean-up of the stopped instance ends), so a start
 * sent right after a stop can meet it.
 */
const LXD_BUSY = /\bis busy running an? "?\w+"? operation/i;
/** How long `call` sends a busy-refused request again: LXD's own operation locks expire after 30 s. */
const BUSY_RETRY_MS = 30_000;

/** OpenSSL's verification failures as node reports them (e.code): the peer is not the certificate we trust. */
const TLS_VERIFY_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A client for LXD's REST API 1.0 over its unix socket or HTTPS: typed errors, waited-on operations, timeouts.
 *
 * @example
 * ```ts
 * const client = new LxdClient({ socket: '/var/lib/lxd/unix.socket' });
 * const info = (await client.request('GET', '/1.0')).metadata;
 * await client.call('PUT', '/1.0/instances/web1/state', { action: 'start' });
 * ```
 */
export class LxdClient {
  readonly project?: string;
  private readonly agent: http.Agent;
  private readonly secure: boolean;
  private readonly base: { socketPath?: string; host?: string; port?: number };
  readonly timeoutMs: number;
  readonly where: string;
  /** The pinned server certificate's SHA-256 fingerprint (https only). */
  private readonly pinned?: string;

  constructor(ep: LxdEndpoint = {}) {
    this.project = ep.project;
    this.timeoutMs = ep.timeoutMs ?? 30_000;
    if (ep.url) {
      let u: URL;
      try {
        u = new URL(ep.url);
      } catch {
        throw new InvalidArgument(`LXD url ${JSON.stringify(ep.url)} is not a URL (expected https://host:8443)`);
      }
      if (u.protocol !== 'https:') throw new InvalidArgument(`LXD url ${ep.url}: only https:// is accepted (LXD's remote API is TLS)`);
      if (!ep.cert || !ep.key || !ep.serverCert) throw new InvalidArgument('LXD over https needs cert, key (the client certificate) and serverCert (pinned)');
      this.secure = true;
      this.base = { host: u.hostname, port: Number(u.port || 8443) };
      const pinned = String(ep.serverCert);
      let want: string;
      try {
        want = new X509Certificate(pinned).fingerprint256;
      } catch (e) {
        throw new InvalidArgument(`LXD serverCert is not a PEM certificate: ${(e as Error).message}`);
      }
      try {
        // Parses the client certificate and checks that the key is its own, before any connection.
        tls.createSecureContext({ cert: ep.cert, key: ep.key });
      } catch (e) {
        throw new InvalidArgument(`LXD client cert/key: ${(e as Error).message} (expected a PEM certificate and its own PEM private key)`);
      }
      this.pinned = want;
      this.agent = new https.Agent({
        keepAlive: true,
        maxSockets: 8,
        cert: ep.cert,
        key: ep.key,
        // The pinned certificate is the only trust anchor, so any other fails verification.
        ca: pinned,
        // LXD's certificates are self-signed for names that rarely match: pin the certificate itself.
        checkServerIdentity: (_host, peer) => {
          return peer.fingerprint256 === want ? undefined : new Error(`LXD server certificate ${peer.fingerprint256} is not the pinned ${want}`);
        },
      });
      this.where = ep.url;
    } else {
      this.secure = false;
      this.base = { socketPath: ep.socket ?? DEFAULT_SOCKET };
      this.agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
      this.where = this.base.socketPath!;
    }
  }

  /** `path` with this client's project added (instances, profiles, images… live in projects). */
  url(path: string, query: Record<string, string | undefined> = {}): string {
    const q = new URLSearchParams();
    if (this.project) q.set('project', this.project);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, v);
    const s = q.toString();
    return s ? `${path}${path.includes('?') ? '&' : '?'}${s}` : path;
  }

  request(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<LxdResponse & { raw?: Buffer; headers?: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = { ...opts.headers };
      let payload: Buffer | undefined;
      if (opts.raw) {
        payload = opts.raw;
        headers['Content-Type'] ??= 'application/octet-stream';
        headers['Content-Length'] = payload.length;
      } else if (body !== undefined) {
        payload = Buffer.from(JSON.stringify(body));
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = payload.length;
      }
      if (opts.stream) headers['Content-Type'] = 'application/octet-stream';
      if (opts.etag) headers['If-Match'] = opts.etag;
      const req = (this.secure ? https : http).request({ ...this.base, host: this.base.host ?? 'lxd', agent: this.agent, method, path, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          const etag = typeof res.headers.etag === 'string' ? res.headers.etag : undefined;
          if (opts.binary && status < 300) return resolve({ type: 'sync', status_code: status, metadata: null, raw: buf, headers: res.headers, etag });
          const r = envelope(method, path, status, buf);
          if (r instanceof LxqError) return reject(r);
          resolve({ ...r, etag, headers: res.headers });
        });
      });
      this.watch(req, method, path, opts, reject);
      if (opts.stream) {
        const src = createReadStream(opts.stream);
        src.on('error', (e) => req.destroy(e));
        if (opts.onSent) {
          const onSent = opts.onSent;
          let sent = 0;
          src.on('data', (c) => onSent((sent += c.length)));
        }
        src.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }

  /**
   * GET `path`'s body (a backup's `/export`) written into `handle` as it arrives (each chunk
   * written before the next is read); an error answer is typed as `request`'s. `timeoutMs` is the
   * longest silence, not the whole transfer's length.
   */
  download(path: string, handle: FileHandle, opts: Pick<RequestOptions, 'signal' | 'timeoutMs'> = {}): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = (this.secure ? https : http).request({ ...this.base, host: this.base.host ?? 'lxd', agent: this.agent, method: 'GET', path }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300) {
          // The error's envelope, typed by request's own reading of it.
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(envelopeError('GET', path, status, Buffer.concat(chunks))));
          res.on('error', reject);
          return;
        }
        (async () => {
          let bytes = 0;
          for await (const chunk of res as AsyncIterable<Buffer>) {
            await handle.write(chunk);
            bytes += chunk.length;
          }
          return bytes;
        })().then(resolve, (e: NodeJS.ErrnoException) => reject(this.connectionError(e, 'GET', path)));
      });
      this.watch(req, 'GET', path, opts, reject);
      req.end();
    });
  }

  /** A request's connection errors typed, its abort by `opts.signal`, its silence timeout. */
  private watch(req: http.ClientRequest, method: string, path: string, opts: Pick<RequestOptions, 'signal' | 'timeoutMs'>, reject: (e: Error) => void): void {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    req.on('error', (e: NodeJS.ErrnoException) => reject(this.connectionError(e, method, path)));
    const signal = opts.signal;
    if (signal) {
      const abort = () => req.destroy(new Aborted(`LXD ${method} ${path} was aborted`));
      if (signal.aborted) abort();
      signal.addEventListener('abort', abort, { once: true });
      req.once('close', () => signal.removeEventListener('abort', abort));
    }
    req.setTimeout(timeoutMs, () => req.destroy(new Timeout(`LXD ${method} ${path}: no answer from ${this.where} within ${timeoutMs} ms`)));
  }

  /** What went wrong before the server answered, typed: refused or missing, a certificate not the pinned one, a timeout. */
  private connectionError(e: NodeJS.ErrnoException, method: string, path: string): LxqError {
    if (e instanceof LxqError) return e;
    const call = `${method} ${path}`;
    if (this.secure && (TLS_VERIFY_ERRORS.has(String(e.code)) || /is not the pinned/.test(e.message)))
      return new PermissionDenied(`LXD at ${this.where}: the server's certificate is not the pinned one (${this.pinned}): ${e.message}`, { cause: e });
    const why = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no LXD server answers at ${this.where}` : `cannot reach LXD at ${this.where}`;
    return new OperationFailed(`${why}: ${e.message}`, { call, errno: typeof e.errno === 'number' ? e.errno : undefined }, { cause: e });
  }

  /** Waits for a background operation; resolves with the finished operation, throws its error typed. */
  async wait(r: LxdResponse, what: string, timeoutS = 120): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
    if (r.type !== 'async' || !r.operation) return r.metadata;
    const [opPath, opQuery] = r.operation.split('?');
    const q = new URLSearchParams(opQuery ?? (this.project ? `project=${this.project}` : ''));
    q.set('timeout', String(timeoutS));
    // With a signal or a progress callback: short waits, LXD's progress read from each (./operation.ts).
    const op =
      currentSignal() || wantsProgress()
        ? await waitWatched(this, opPath, q, what, timeoutS)
        : (await this.request('GET', `${opPath}/wait?${q}`, undefined, { timeoutMs: (timeoutS + 10) * 1000 })).metadata;
    if (op.status_code === 103 || op.status_code === 105) throw new Timeout(`LXD ${what}: still ${op.status} after ${timeoutS} s`);
    if (op.status_code !== 200) {
      const [method, ...p] = what.split(' ');
      throw lxdError({ method, path: p.join(' '), status: op.status_code, serverMessage: op.err || op.status, operation: true });
    }
    return op;
  }

  /**
   * A request and, if it is asynchronous, the wait for its operation. Refused because the instance is
   * busy with another action (LXD took nothing then), it is sent again until that action ends.
   */
  async call(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
    const deadline = Date.now() + BUSY_RETRY_MS;
    for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
      try {
        return await this.wait(await this.request(method, path, body, opts), `${method} ${path}`);
      } catch (e) {
        if (!(e instanceof Busy) || Date.now() + pause > deadline) throw e;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /** Where a websocket for `path` connects (ws+unix for the socket, wss with the pinned agent for TLS). */
  websocketUrl(path: string): string {
    return this.secure ? `wss://${this.base.host}:${this.base.port}${path}` : `ws+unix://${this.base.socketPath}:${path}`;
  }

  websocketOptions(): { agent?: http.Agent; handshakeTimeout: number } {
    return { ...(this.secure ? { agent: this.agent } : {}), handshakeTimeout: this.timeoutMs };
  }

  close(): void {
    this.agent.destroy();
  }
}
