/**
 * Partial files lxq writes outside the host's directory (an export's `.<file>.partial-<pid>` in
 * the user's directory) are noted first in the host's `instances/.lxq-partials/`, with the
 * writing process's pid and start time, and the note removed once the file is renamed into place
 * or removed. The next Host.open removes the partial files of processes that died.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { writeJsonAtomic } from '../core/fs';
import { currentOwner, type Owner, ownerGone } from '../core/owner';

export const PARTIALS_DIR = '.lxq-partials';

interface PartialNote extends Owner {
  file: string;
}

/** Notes in `registry` that this process is about to write `file`; returns the note, for dropPartial. */
export async function notePartial(registry: string, file: string): Promise<string> {
  await fs.mkdir(registry, { recursive: true, mode: 0o700 });
  const note = path.join(registry, `${process.pid}-${randomBytes(4).toString('hex')}.json`);
  const content: PartialNote = { ...(await currentOwner()), file };
  await writeJsonAtomic(note, content);
  return note;
}

export async function dropPartial(note: string): Promise<void> {
  await fs.rm(note, { force: true });
}

/** Removes the partial files (and notes) in `registry` whose process is gone; returns the files removed. */
export async function clearPartials(registry: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await fs.readdir(registry).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue; // a note being written (writeJsonAtomic's temporary file)
    const note = path.join(registry, name);
    const content = await fs
      .readFile(note, 'utf8')
      .then((t) => JSON.parse(t) as PartialNote)
      .catch(() => undefined);
    if (content && !(await ownerGone(content))) continue;
    if (content && typeof content.file === 'string' && path.isAbsolute(content.file) && /\.partial-\d+$/.test(content.file)) {
      await fs.rm(content.file, { force: true });
      removed.push(content.file);
    }
    await fs.rm(note, { force: true });
  }
  return removed;
}
