/**
 * The Debian cloud kernel package: picked from what the host's apt knows, fetched with
 * `apt-get download` into a cache kept between builds (an older cached one is used when apt is
 * offline), and unpacked with `dpkg-deb -x`.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { execFileP, run } from './build-tools';

const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/** Debian version comparison, by dpkg itself. */
async function versionGt(a: string, b: string): Promise<boolean> {
  try {
    await execFileP('dpkg', ['--compare-versions', a, 'gt', b]);
    return true;
  } catch {
    return false;
  }
}

async function aptCandidate(pkg: string): Promise<string | undefined> {
  const out = await run('apt-cache', ['policy', pkg]).catch(() => '');
  const m = /Candidate:\s*(\S+)/.exec(out);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/**
 * The kernel package: the unsigned image that Debian's `linux-image-cloud-amd64` currently
 * depends on (the suite's kernel), else the newest `linux-image-*-cloud-amd64(-unsigned)` apt
 * knows. (Newer series from the same archive, e.g. 6.12 in bookworm, boot about twice as slowly
 * under TCG here, so the suite's default is preferred to a plain "highest version".)
 */
async function pickKernelPackage(): Promise<string> {
  const deps = await run('apt-cache', ['depends', KERNEL_META_PACKAGE]).catch(() => '');
  const m = /Depends:\s*(linux-image-\S+-cloud-amd64)\b/.exec(deps);
  if (m) {
    for (const name of [`${m[1]}-unsigned`, m[1]]) if (await aptCandidate(name)) return name;
  }
  const found = await run('apt-cache', ['search', '--names-only', '^linux-image-[0-9].*-cloud-amd64(-unsigned)?$']).catch(() => '');
  let best: { name: string; ver: string } | undefined;
  for (const line of found.split('\n')) {
    const name = line.split(' - ')[0]?.trim();
    if (!name || name.endsWith('-dbg')) continue;
    const ver = await aptCandidate(name);
    if (!ver) continue;
    if (!best || (await versionGt(ver, best.ver)) || (ver === best.ver && name.endsWith('-unsigned'))) best = { name, ver };
  }
  if (!best) {
    throw new OperationFailed(`apt knows no Debian cloud kernel (${KERNEL_META_PACKAGE}); run "apt-get update" with Debian's main archive configured`);
  }
  return best.name;
}

async function debField(deb: string, field: string): Promise<string> {
  return (await run('dpkg-deb', ['-f', deb, field])).trim();
}

/** A cached .deb of `pkg` (newest if several). */
async function cachedDeb(cacheDir: string, pkg: string | undefined): Promise<string | undefined> {
  let best: { file: string; ver: string } | undefined;
  for (const f of await fs.readdir(cacheDir).catch(() => [] as string[])) {
    if (!f.endsWith('.deb')) continue;
    if (pkg ? !f.startsWith(`${pkg}_`) : !/^linux-image-.*-cloud-amd64(-unsigned)?_/.test(f)) continue;
    const file = path.join(cacheDir, f);
    const ver = await debField(file, 'Version').catch(() => '');
    if (!ver) continue;
    if (!best || (await versionGt(ver, best.ver))) best = { file, ver };
  }
  return best?.file;
}

export interface Kernel {
  pkg: string;
  pkgVersion: string;
  version: string;
  /** The unpacked package. */
  root: string;
  vmlinuz: string;
}

/** The kernel package (`wanted`, else the one apt picks), from the cache or downloaded, unpacked under `work`. */
export async function fetchKernel(cacheDir: string, work: string, wanted: string | undefined, log: (l: string) => void): Promise<Kernel> {
  let pkg: string | undefined = wanted;
  let deb: string | undefined;
  try {
    pkg ??= await pickKernelPackage();
  } catch (e) {
    // Offline apt: fall back to any cached cloud kernel.
    deb = await cachedDeb(cacheDir, undefined);
    if (!deb) throw e;
    log(`vm image: apt cannot pick a kernel (${(e as Error).message}); using the cached ${path.basename(deb)}`);
  }
  if (!deb && pkg) {
    const want = await aptCandidate(pkg);
    const have = await cachedDeb(cacheDir, pkg);
    if (have && (!want || (await debField(have, 'Version')) === want)) {
      deb = have;
      log(`vm image: using the cached ${path.basename(have)}`);
    } else {
      const dl = await fs.mkdtemp(path.join(cacheDir, '.download-'));
      try {
        deb = await download(pkg, dl, cacheDir, log);
        if (have && have !== deb) await fs.rm(have, { force: true });
      } catch (e) {
        if (!have) throw e;
        deb = have; // offline: an older cached kernel beats no image
        log(`vm image: ${(e as Error).message}; using the cached ${path.basename(have)}`);
      } finally {
        await fs.rm(dl, { recursive: true, force: true });
      }
    }
  }
  if (!deb) throw new OperationFailed('no kernel package to use');
  return unpackKernel(deb, work);
}

/** `apt-get download`s `pkg` into `dl`, then moves it into the cache; the cached file. */
async function download(pkg: string, dl: string, cacheDir: string, log: (l: string) => void): Promise<string> {
  // apt drops privileges to _apt for downloads, which cannot write into our directory.
  const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
  log(`vm image: apt-get download ${pkg}`);
  await run('apt-get', ['download', '-q', ...sandbox, pkg], { cwd: dl });
  const got = (await fs.readdir(dl)).filter((f) => f.endsWith('.deb'));
  if (got.length !== 1) throw new OperationFailed(`apt-get download ${pkg} left ${got.length} .deb files`);
  const deb = path.join(cacheDir, got[0]);
  await fs.rename(path.join(dl, got[0]), deb);
  return deb;
}

async function unpackKernel(deb: string, work: string): Promise<Kernel> {
  const root = path.join(work, 'kernel');
  await fs.mkdir(root);
  await run('dpkg-deb', ['-x', deb, root]);
  const boot = await fs.readdir(path.join(root, 'boot'));
  const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new OperationFailed(`${path.basename(deb)} holds no boot/vmlinuz-*`);
  const version = vmlinuz.slice('vmlinuz-'.length);
  await fs.access(path.join(root, 'lib/modules', version));
  return {
    pkg: await debField(deb, 'Package'),
    pkgVersion: await debField(deb, 'Version'),
    version,
    root,
    vmlinuz: path.join(root, 'boot', vmlinuz),
  };
}

/** The module files to insmod, in dependency order, with their paths inside `k.root`. */
