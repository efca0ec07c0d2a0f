/**
 * Archives from elsewhere are hostile (README.md, "Copy, rename, export and import" and "Debian
 * images and the image store"): before anything is extracted, the listing is read (C-quoted
 * names, so a newline in a name cannot fake a line) and every member must land inside the
 * extraction directory: no absolute names, no "..", nothing under a symlink
 * of the archive, hard links and relative symlinks pointing inside it.
 */
import * as path from 'node:path';

import { InvalidArgument, type LxqError } from './errors';
import { run } from './run';

/** One archive member: its kind (tar's first listing letter: '-', 'd', 'l', 'h', 'c', 'b', 'p'), name and link target. */
export interface TarMember {
  kind: string;
  name: string;
  link?: string;
}

const LINE = /^(\S)\S*\s+\S+\s+[\d,\s]+\s+\S+\s+\S+\s+"((?:[^"\\]|\\.)*)"(?: (?:->|link to) "((?:[^"\\]|\\.)*)")?$/;

const ESCAPES: Record<string, number> = { a: 7, b: 8, t: 9, n: 10, v: 11, f: 12, r: 13 };

/** A C-quoted name back to its bytes (UTF-8 names are octal escapes of their bytes). */
function unquote(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') {
      bytes.push(...Buffer.from(s[i], 'utf8'));
    } else if (/^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      const c = s[++i];
      bytes.push(ESCAPES[c] ?? c.charCodeAt(0));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `tar --list --verbose` parsed; a truncated or non-tar file is refused with InvalidArgument (`what` names it). */
export async function listTar(file: string, what: string): Promise<TarMember[]> {
  let stdout: string;
  try {
    stdout = await run('tar', ['--list', '--verbose', '--numeric-owner', '--quoting-style=c', '--file', file], { maxBuffer: 512 * 1024 * 1024 });
  } catch (e) {
    throw new InvalidArgument(`${file} is not a complete ${what} (tar could not read it: ${(e as LxqError).message.split(': ').slice(1).join(': ')})`);
  }
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = LINE.exec(l);
      if (!m) throw new InvalidArgument(`${file}: an archive member tar describes as ${JSON.stringify(l.slice(0, 120))} is not one lxq reads`);
      return { kind: m[1], name: unquote(m[2]), ...(m[3] !== undefined ? { link: unquote(m[3]) } : {}) };
    });
}

/**
 * Refuses (InvalidArgument naming the member) an archive any member of which could land outside
 * the directory it is extracted into, or under `top` when given. Returns the names, without "./"
 * and trailing "/". `linksOut` lets symlinks point anywhere (they are kept as links, never
 * followed by the extraction: files.pushTree).
 */
export function checkMembers(file: string, members: TarMember[], options: { top?: string; linksOut?: boolean } = {}): string[] {
  const symlinks = new Set<string>();
  const bad = (name: string, why: string) => new InvalidArgument(`${file} is refused: member ${JSON.stringify(name)} ${why}`);
  const inside = (p: string) => !path.posix.isAbsolute(p) && !p.split('/').includes('..') && (options.top === undefined || p.split('/')[0] === options.top);
  const names: string[] = [];
  for (const m of members) {
    const name = m.name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    if (path.posix.isAbsolute(name)) throw bad(m.name, 'is an absolute path');
    const parts = name.split('/');
    if (parts.includes('..')) throw bad(m.name, 'contains ".."');
    if (options.top !== undefined && parts[0] !== options.top) throw bad(m.name, `is outside "${options.top}/"`);
    for (let i = 1; i < parts.length; i++) if (symlinks.has(parts.slice(0, i).join('/'))) throw bad(m.name, 'lies under a symlink of the archive');
    if (m.kind === 'l') symlinks.add(name);
    if (m.kind === 'h' && m.link !== undefined && !inside(m.link.replace(/^(\.\/)+/, ''))) throw bad(m.name, `is a hard link to ${JSON.stringify(m.link)}, outside the archive`);
    // A symlink's target is resolved inside the instance's root (absolute ones too), except above it.
    if (m.kind === 'l' && m.link !== undefined && !options.linksOut && !path.posix.isAbsolute(m.link)) {
      const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(name), m.link));
      if (resolved === '..' || resolved.startsWith('../') || (options.top !== undefined && resolved.split('/')[0] !== options.top)) {
        throw bad(m.name, `is a symlink to ${JSON.stringify(m.link)}, out of the archive`);
      }
    }
    names.push(name);
  }
  return names;
}
