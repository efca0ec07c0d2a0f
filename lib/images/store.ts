/**
 * The host's image store: images are built locally (no image server is reachable), once, then
 * reused by every instance. An image is a directory with an `image.json` written last, so a
 * half-built image is never used.
 *
 * Each image variant lives in `<store>/<name>/<recipe>/`, where the recipe is a digest of the
 * builder's declared inputs (catalog.ts): a version the builder bumps when its output changes,
 * the variant's type and the data that decides the content (guest file texts, module list,
 * kernel command line, the identity of the host binaries copied in, apt sources, packages).
 * Moving code around rebuilds nothing; a changed input makes a new image beside the old one
 * instead of replacing it: VMs keep their qcow2 backing file.
 *
 * A build runs in `<store>/<name>/.<recipe>.tmp-<pid>-<random>` and is renamed into place; a
 * temporary directory whose process is gone (a crash) is removed by the next build. Derived
 * images (`build`) are kept as `<store>/<name>/definition.json`, written once they are built, so
 * that every process sharing the store knows them.
 */
import { EventEmitter } from 'eventemitter3';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { AlreadyExists, Busy, InvalidArgument, NotFound } from '../core/errors';
import { processAlive } from '../core/staging';
import { exists, readJson, writeJsonAtomic } from '../core/fs';
import { FileLock } from '../core/lock';
import { removeTree } from '../storage/pools/mounts';
import { refuseUnknownKeys } from '../core/keys';
import { run, sha256 } from './build-tools';
import { isImageName } from './meta';
import { exportImage, fileDigest, unpackImage } from './lxd-format';
import { BUILTIN_DERIVATIONS, BUILTIN_IMAGES, type Builder, debianReleaseOf, type Derivation, derivedImage, type Image, type ImageVariants } from './catalog';
import { BUILD_OPTION_KEYS, type BuildOptions, ENSURE_OPTION_KEYS, type EnsureOptions, type ImageImportOptions, type ImageInfo, type ImageProgress, type ImageStoreEvents, type PublishOptions, type StoreOptions } from './types';
import { checkAborted, checkLongOptions, currentSignal, LONG_OPTION_KEYS, longOperation, refuseAborted, SharedWork } from '../core/abort';

/** An imported image: it cannot be built again, only imported again. */
interface Imported {
  imported: { type: InstanceType; digest: string; file: string };
}
/** A published image (an instance or a snapshot made an image): it cannot be built again either. */
interface Published {
  published: { type: InstanceType; id: string; instance: string; snapshot?: string };
}
type Definition = Derivation | Imported | Published;

function importedBuilder(name: string, digest: string, how = 'import it again'): Builder {
  return {
    version: 1,
    inputs: async () => ({ imported: digest }),
    build: async () => {
      throw new NotFound(`image "${name}" is missing from the store; ${how}`);
    },
  };
}

const MANIFEST = 'image.json';
const DEFINITION = 'definition.json';
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$/;
const TMP = /^\.[0-9a-f]+\.tmp-(\d+)-/;

/**
 * The image store: lxq's images built from the host's packages and cached by their inputs, and images imported from LXD tarballs.
 *
 * @example
 * ```ts
 * const img = await host.images.ensure('busybox', { onProgress: (p) => console.log(p.percent, p.phase) });
 * for (const i of await host.images.list()) console.log(i.name, i.type, i.size);
 * ```
 */
export class ImageStore extends EventEmitter<ImageStoreEvents> {
  private readonly building = new Map<string, SharedWork<Image>>();
  private readonly publishLock: FileLock;

  /** @internal The host makes its store (`host.images`), giving it what the store needs to know of instances. */
  constructor(
    readonly dir: string,
    private readonly options: StoreOptions = {},
  ) {
    super();
    this.publishLock = new FileLock(path.join(dir, '.publish.lock'), `publishing to the image store ${dir}`);
  }

  private nameDir(name: string): string {
    return path.join(this.dir, ...name.split('/'));
  }

  private async definition(name: string): Promise<Definition | undefined> {
    if (BUILTIN_IMAGES[name] || typeof name !== 'string' || !isImageName(name)) return undefined;
    return readJson<Definition>(path.join(this.nameDir(name), DEFINITION)).catch(() => undefined);
  }

  /** What `name` adds to the image it is made from: a derived image's definition, or lxq's own derived image's (debian/12/cloud). */
  private async derivation(name: string): Promise<Derivation | undefined> {
    if (typeof name === 'string' && Object.hasOwn(BUILTIN_DERIVATIONS, name)) return BUILTIN_DERIVATIONS[name];
    const d = await this.definition(name);
    return d && 'from' in d ? d : undefined;
  }

  /** The derived images whose definitions are in the store. */
  private async derivedNames(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string, prefix: string[], depth: number): Promise<void> => {
      if (depth > 4) return;
      const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
      if (entries.some((e) => e.name === DEFINITION)) out.push(prefix.join('/'));
      for (const e of entries) if (e.isDirectory() && !e.name.startsWith('.') && !/^[0-9a-f]{12}$/.test(e.name)) await walk(path.join(dir, e.name), [...prefix, e.name], depth + 1);
    };
    await walk(this.dir, [], 0);
    return out.filter((n) => n && !BUILTIN_IMAGES[n]);
  }

  /** The names of the images this store can build or has: lxq's own, then derived ones. */
  async known(): Promise<string[]> {
    return [...Object.keys(BUILTIN_IMAGES), ...(await this.derivedNames()).sort()];
  }

  private async variantsOf(name: string): Promise<ImageVariants> {
    const builtin = BUILTIN_IMAGES[name];
    if (builtin) return builtin;
    const def = await this.definition(name);
    if (def && 'imported' in def) return { [def.imported.type]: importedBuilder(name, def.imported.digest) };
    if (def && 'published' in def) return { [def.published.type]: importedBuilder(name, def.published.id, 'publish it again') };
    const chain: Derivation[] = [];
    for (let d = await this.derivation(name); d; d = await this.derivation(d.from)) {
      chain.unshift(d);
      if (chain.length > 16) break;
    }
    const release = chain.length ? await this.releaseOf(name) : undefined;
    if (!release) {
      if (typeof name !== 'string' || !isImageName(name)) throw new InvalidArgument(`bad image name ${JSON.stringify(name)}`);
      throw new InvalidArgument(`unknown image "${name}"; available: ${(await this.known()).map((n) => `"${n}"`).join(', ')}`);
    }
    return derivedImage(name, chain, release);
  }

  private async releaseOf(name: string) {
    const defs = new Map<string, Derivation>();
    for (let n: string | undefined = name; n && (!BUILTIN_IMAGES[n] || Object.hasOwn(BUILTIN_DERIVATIONS, n)) && defs.size < 16; ) {
      const d = await this.derivation(n);
      if (!d) break;
      defs.set(n, d);
      n = d.from;
    }
    return debianReleaseOf(name, (n) => defs.get(n));
  }

  /** The instance types the image has a variant for. */
  async types(name: string): Promise<InstanceType[]> {
    return Object.keys(await this.variantsOf(name)) as InstanceType[];
  }

  private async variant(name: string, type: InstanceType | undefined): Promise<{ type: InstanceType; builder: Builder }> {
    const variants = await this.variantsOf(name);
    const types = Object.keys(variants) as InstanceType[];
    const chosen = type ?? (types.includes('container') ? 'container' : types[0]);
    const builder = variants[chosen];
    if (!builder) throw new InvalidArgument(`image "${name}" is a ${types.join(' and ')} image, not a ${chosen} image`);
    return { type: chosen, builder };
  }

  private async pathOf(name: string, type: InstanceType, builder: Builder): Promise<string> {
    const recipe = sha256(JSON.stringify({ version: builder.version, type, inputs: await builder.inputs() })).slice(0, 12);
    return path.join(this.nameDir(name), recipe);
  }

  /** The image if it is built, else NotFound. */
  async get(name: string, options: Pick<EnsureOptions, 'type'> = {}): Promise<Image> {
    refuseUnknownKeys('image get', options, ['type']);
    const { type, builder } = await this.variant(name, options.type);
    const dir = await this.pathOf(name, type, builder);
    try {
      const m = await readJson<Omit<Image, 'dir'>>(path.join(dir, MANIFEST));
      return { ...m, dir };
    } catch {
      throw new NotFound(`image "${name}" (${type}) is not built yet; call host.images.ensure("${name}")`);
    }
  }

  /** Every built image in the store, with its size; builds whose inputs changed show `current: false`. */
  async list(): Promise<ImageInfo[]> {
    const out: ImageInfo[] = [];
    for (const name of await this.known()) {
      const current = new Set<string>();
      for (const type of await this.types(name).catch(() => [] as InstanceType[])) {
        const v = await this.variant(name, type).catch(() => undefined);
        if (v) current.add(await this.pathOf(name, type, v.builder).catch(() => ''));
      }
      const dirs = await fs.readdir(this.nameDir(name)).catch(() => [] as string[]);
      for (const d of dirs.filter((x) => /^[0-9a-f]{12}$/.test(x)).sort()) {
        const dir = path.join(this.nameDir(name), d);
        const m = await readJson<Omit<Image, 'dir'>>(path.join(dir, MANIFEST)).catch(() => undefined);
        if (!m) continue;
        const size = Number((await run('du', ['-sb', dir]).catch(() => '0')).split('\t')[0]) || 0;
        const from = typeof m.meta?.from === 'string' ? m.meta.from : undefined;
        out.push({ ...m, dir, size, current: current.has(dir), ...(from ? { from } : {}) });
      }
    }
    return out;
  }

  /** The image, built first if needed. Concurrent calls share one build. */
  async ensure(name: string, options: EnsureOptions = {}): Promise<Image> {
    refuseUnknownKeys('image ensure', options, ENSURE_OPTION_KEYS);
    checkLongOptions(options);
    // The caller's signal, or that of the operation this ensure serves (a create's).
    const signal = options.signal ?? currentSignal();
    refuseAborted(`ensuring image ${name}`, signal); // before a build starts
    const { type, builder } = await this.variant(name, options.type);
    const key = `${name}\0${type}`;
    let p = this.building.get(key);
    if (!p) {
      p = new SharedWork(`building image ${name}`, () => this.get(name, { type }).catch((e) => (e instanceof NotFound ? this.buildVariant(name, type, builder, options.onProgress) : Promise.reject(e))));
      this.building.set(key, p);
      p.promise.finally(() => this.building.delete(key)).catch(() => undefined);
    } else if (options.onProgress) {
      const listener = options.onProgress;
      const forward = (e: ImageProgress) => e.name === name && e.type === type && listener(e);
      this.on('progress', forward);
      p.promise.finally(() => this.off('progress', forward)).catch(() => undefined);
    }
    return p.wait(`ensuring image ${name}`, signal);
  }

  /**
   * A derived image: `from` (a Debian image) with more packages and commands, cached by its
   * inputs (the same inputs build nothing again). Nothing is kept if the build fails.
   */
  async build(name: string, options: BuildOptions): Promise<Image> {
    if (options === null || typeof options !== 'object') throw new InvalidArgument('build options must be an object with `from`');
    refuseUnknownKeys('image build', options, BUILD_OPTION_KEYS);
    checkLongOptions(options);
    if (typeof name !== 'string' || !isImageName(name)) throw new InvalidArgument(`bad image name ${JSON.stringify(name)}: lower-case letters, digits, ".", "_", "-", up to 4 parts separated by "/"`);
    if (BUILTIN_IMAGES[name]) throw new InvalidArgument(`"${name}" is one of lxq's own images; give the derived image another name`);
    const packages = options.packages ?? [];
    const commands = options.run ?? [];
    if (!Array.isArray(packages) || packages.some((p) => typeof p !== 'string' || !PACKAGE_NAME.test(p))) {
      throw new InvalidArgument(`packages must be Debian package names (optionally name=version), got ${JSON.stringify(packages)}`);
    }
    if (!Array.isArray(commands) || commands.some((c) => typeof c !== 'string' || !c.trim() || c.includes('\0'))) {
      throw new InvalidArgument('run must be a list of non-empty shell commands');
    }
    if (typeof options.from !== 'string') throw new InvalidArgument('build needs `from`, the image to start from (e.g. "debian/12")');
    if (!(await this.releaseOf(options.from)) && !(await this.variantsOf(options.from).catch(() => undefined))) {
      await this.variantsOf(options.from); // unknown: the list of images
    }
    if (!(await this.releaseOf(options.from))) throw new InvalidArgument(`image "${options.from}" is not a Debian image: only Debian images can take packages`);
    // Its progress is the build's own (ImageProgress).
    return longOperation(`building image ${name}`, { signal: options.signal }, async () => {
      const definition: Derivation = { from: options.from, packages, run: commands };
      const release = (await this.releaseOf(options.from))!;
      const chain: Derivation[] = [definition];
      for (let d = await this.derivation(options.from); d; d = await this.derivation(d.from)) chain.unshift(d);
      // The container variant holds the tree (a VM variant is made from it): built first, and the
      // definition is written once it exists, so a failed build leaves nothing behind.
      const builder = derivedImage(name, chain, release).container!;
      const dir = await this.pathOf(name, 'container', builder);
      const built = await readJson<Omit<Image, 'dir'>>(path.join(dir, MANIFEST)).then((m) => ({ ...m, dir }), () => undefined);
      const image = built ?? (await this.buildVariant(name, 'container', builder, options.onProgress));
      await this.writeDefinition(name, definition);
      return options.type === 'vm' ? this.ensure(name, { type: 'vm', onProgress: options.onProgress }) : image;
    });
  }

  private async writeDefinition(name: string, d: Derivation): Promise<void> {
    await fs.mkdir(this.nameDir(name), { recursive: true });
    await writeJsonAtomic(path.join(this.nameDir(name), DEFINITION), d);
  }

  /**
   * Imports an image in LXD's unified tarball format (metadata.yaml + rootfs/ or rootfs.img) as
   * `alias`. The archive is checked first (complete, metadata present and well formed, an
   * architecture this host runs, no path escaping); nothing is kept if anything fails.
   */
  async import(file: string, options: ImageImportOptions): Promise<Image> {
    refuseUnknownKeys('image import', options, ['alias', ...Object.keys(LONG_OPTION_KEYS)]);
    checkLongOptions(options);
    const name = options?.alias;
    if (typeof name !== 'string' || !isImageName(name)) throw new InvalidArgument(`import needs an alias, a valid image name, got ${JSON.stringify(name)}`);
    if (BUILTIN_IMAGES[name] || (await this.definition(name))) throw new AlreadyExists(`image "${name}" already exists; delete it first or choose another alias`);
    if (typeof file !== 'string') throw new InvalidArgument('import needs the path of a tarball');
    return longOperation(`importing image ${name}`, options, async () => {
      const digest = await fileDigest(file).catch(() => {
        throw new InvalidArgument(`no file ${file} to import`);
      });
      const parent = this.nameDir(name);
      await fs.mkdir(parent, { recursive: true, mode: 0o755 });
      await this.removeAbandoned(parent);
      const tmp = path.join(parent, `.${digest.slice(0, 12)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
      await fs.mkdir(tmp, { mode: 0o755 });
      try {
        const unpacked = await unpackImage(path.resolve(file), tmp);
        const final = await this.pathOf(name, unpacked.type, importedBuilder(name, digest));
        const image = { name, type: unpacked.type, createdAt: new Date().toISOString(), meta: { ...unpacked.meta, importedFrom: path.resolve(file) } };
        await writeJsonAtomic(path.join(tmp, MANIFEST), image);
        await fs.rename(tmp, final);
        const def: Imported = { imported: { type: unpacked.type, digest, file: path.resolve(file) } };
        await writeJsonAtomic(path.join(parent, DEFINITION), def);
        return { ...image, dir: final };
      } catch (e) {
        await fs.rm(tmp, { recursive: true, force: true });
        await fs.rmdir(parent).catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Makes a stopped instance (container or VM), or one of its snapshots (the instance then in any
   * status), an image of this store named `alias`, launchable like any other (LXD's `publish`): a
   * container's rootfs with its ids back to the image's own and an empty machine id; a VM's disk
   * flattened (no backing file) beside its image's kernel and initramfs. Built in a temporary
   * directory renamed into place; the image appears when its definition is written, last.
   */
  async publish(instance: unknown, alias: string, options: PublishOptions = {}): Promise<Image> {
    if (options === null || typeof options !== 'object') throw new InvalidArgument('publish options must be an object');
    refuseUnknownKeys('image publish', options, ['snapshot', ...Object.keys(LONG_OPTION_KEYS)]);
    checkLongOptions(options);
    if (typeof alias !== 'string' || !isImageName(alias)) {
      throw new InvalidArgument(`bad image alias ${JSON.stringify(alias)}: lower-case letters, digits, ".", "_", "-", up to 4 parts separated by "/"`);
    }
    if (options.snapshot !== undefined && (typeof options.snapshot !== 'string' || !options.snapshot)) throw new InvalidArgument('snapshot must be a snapshot name');
    const taken = async () => {
      if (BUILTIN_IMAGES[alias] || (await this.definition(alias))) throw new AlreadyExists(`image "${alias}" already exists; delete it first or choose another alias`);
    };
    await taken();
    return longOperation(`publishing ${alias}`, options, async () => {
      if (!this.options.instance) throw new InvalidArgument('this image store has no instances to publish (open it through Host)');
      const source = await this.options.instance(instance);
      const id = randomBytes(8).toString('hex');
      const parent = this.nameDir(alias);
      const created = await fs.mkdir(parent, { recursive: true, mode: 0o755 });
      await this.removeAbandoned(parent);
      const tmp = path.join(parent, `.${id.slice(0, 12)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
      await fs.mkdir(tmp, { mode: 0o755 });
      try {
        const { type, meta } = await source.publishData(tmp, { snapshot: options.snapshot });
        checkAborted(); // an aborted publish leaves no image: the last moment before it appears
        const snapshot = options.snapshot !== undefined ? { snapshot: options.snapshot } : {};
        const image = { name: alias, type, createdAt: new Date().toISOString(), meta: { ...meta, publishedFrom: { instance: source.name, ...snapshot } } };
        await writeJsonAtomic(path.join(tmp, MANIFEST), image);
        const final = await this.pathOf(alias, type, importedBuilder(alias, id));
        // The alias is taken by the build's rename and its definition's write together: under a
        // lock of every process on the host, so two publishes of one alias cannot both pass.
        await this.publishLock.hold(async () => {
          await taken(); // published by another caller meanwhile
          await this.removeUndefinedBuilds(parent, alias);
          await fs.rename(tmp, final);
          const def: Published = { published: { type, id, instance: source.name, ...snapshot } };
          await writeJsonAtomic(path.join(parent, DEFINITION), def).catch(async (e) => {
            await fs.rm(final, { recursive: true, force: true });
            throw e;
          });
        });
        return { ...image, dir: final };
      } catch (e) {
        await fs.rm(tmp, { recursive: true, force: true });
        // The directories this call made, innermost first, while empty: the store as it was.
        for (let d = parent; created && d.length >= created.length; d = path.dirname(d)) if (!(await fs.rmdir(d).then(() => true, () => false))) break;
        throw e;
      }
    });
  }

  /** Writes the image (built first if needed) to `file` in LXD's unified tarball format. */
  async export(name: string, file: string, options: Pick<EnsureOptions, 'type'> = {}): Promise<void> {
    refuseUnknownKeys('image export', options, ['type']);
    if (typeof file !== 'string' || !file) throw new InvalidArgument('export needs a file name ending in .tar.xz, .tar.gz or .tar');
    await exportImage(await this.ensure(name, options), path.resolve(file));
  }

  /** Removes every build of the image (and its definition); Busy while an instance uses it. */
  async delete(name: string): Promise<void> {
    if (typeof name !== 'string' || !isImageName(name)) throw new InvalidArgument(`bad image name ${JSON.stringify(name)}`);
    const dir = this.nameDir(name);
    const hasBuilds = (await fs.readdir(dir).catch(() => [] as string[])).some((d) => /^[0-9a-f]{12}$/.test(d));
    if (!hasBuilds && !(await exists(path.join(dir, DEFINITION)))) throw new NotFound(`image "${name}" is not in the store`);
    const users = (await this.options.users?.(name)) ?? [];
    if (users.length) throw new Busy(`image "${name}" is used by ${users.map((u) => `"${u}"`).join(', ')}; delete those instances first`, users);
    // Only this name's own builds: a derived image below it (`name/x`) stays.
    const entries = (await fs.readdir(dir).catch(() => [] as string[])).filter((d) => /^[0-9a-f]{12}$/.test(d) || d === DEFINITION);
    // The pools' copies first: a crash between leaves an image the pools make again when used.
    await this.options.release?.(entries.filter((d) => d !== DEFINITION).map((d) => path.join(dir, d)));
    for (const d of entries) await fs.rm(path.join(dir, d), { recursive: true, force: true });
    await fs.rmdir(dir).catch(() => undefined);
  }

  private async buildVariant(name: string, type: InstanceType, builder: Builder, onProgress?: (e: ImageProgress) => void): Promise<Image> {
    const final = await this.pathOf(name, type, builder);
    const parent = path.dirname(final);
    await fs.mkdir(parent, { recursive: true, mode: 0o755 });
    await this.removeAbandoned(parent);
    const tmp = path.join(parent, `.${path.basename(final)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    await fs.mkdir(tmp, { mode: 0o755 });
    const report = (fraction: number, phase: string) => {
      const e: ImageProgress = { name, type, phase, percent: Math.max(0, Math.min(100, Math.round(fraction * 100))) };
      this.emit('progress', e);
      onProgress?.(e);
    };
    try {
      report(0, 'starting');
      const t0 = Date.now();
      // An image made from another (a VM from its container tree) reports that build as its first tenth.
      const ensure = (n: string, t: InstanceType) => this.ensure(n, { type: t, onProgress: (e) => e.percent < 100 && report(e.percent / 1000, `${n} (${t}): ${e.phase}`) });
      const meta = await builder.build({ dir: tmp, progress: report, ensure });
      const image = { name, type, createdAt: new Date().toISOString(), meta: { ...meta, buildMs: Date.now() - t0 } };
      await writeJsonAtomic(path.join(tmp, MANIFEST), image);
      try {
        await fs.rename(tmp, final);
      } catch (e) {
        // Another process finished the same image first: keep theirs.
        if (!(await exists(path.join(final, MANIFEST)))) throw e;
        await fs.rm(tmp, { recursive: true, force: true });
      }
      report(1, 'done');
      return { ...(await readJson<Omit<Image, 'dir'>>(path.join(final, MANIFEST))), dir: final };
    } catch (e) {
      await removeTree(tmp); // a killed build may have left mounts in it
      await fs.rmdir(parent).catch(() => undefined); // a name that never got an image
      throw e;
    }
  }

  /** Temporary build directories left by a process that is gone (a crash). */
  /**
   * Builds of a publish of `alias` that died between its build's rename and its definition's
   * write: invisible (no definition names them), so nothing else would ever clear them. Only
   * called holding the publish lock with the alias free, when no publish of it is half-done.
   */
  private async removeUndefinedBuilds(parent: string, alias: string): Promise<void> {
    for (const d of await fs.readdir(parent).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{12}$/.test(d)) continue;
      const m = await readJson<Omit<Image, 'dir'>>(path.join(parent, d, MANIFEST)).catch(() => undefined);
      if (m?.name === alias) await fs.rm(path.join(parent, d), { recursive: true, force: true });
    }
  }

  private async removeAbandoned(parent: string): Promise<void> {
    for (const d of await fs.readdir(parent).catch(() => [] as string[])) {
      const m = TMP.exec(d);
      if (m && !processAlive(Number(m[1]))) await removeTree(path.join(parent, d));
    }
  }
}
