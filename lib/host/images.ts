/** A local host's image store, made on first use (lib/images is loaded then: `lxq list` and `lxq exec` never load it). */
import { InvalidArgument } from '../core/errors';
import type { ImageStore } from '../images/store';
import { BaseInstance } from '../instance/base';
import type { Instance } from '../instance/instance';
import { instanceRecords } from './records';

/** The store in `imagesDir`, whose users are the instances in `instancesDir` and which publishes this host's instances (`get`). */
export function hostImageStore(imagesDir: string, instancesDir: string, get: (name: string) => Promise<Instance>, release: (builds: string[]) => Promise<void>): ImageStore {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  const { ImageStore } = require('../images/store') as typeof import('../images/store');
  return new ImageStore(imagesDir, {
    users: async (image) => (await instanceRecords(instancesDir)).filter((r) => r.image === image).map((r) => r.name),
    instance: async (i) => {
      const found = typeof i === 'string' ? await get(i) : i;
      if (!(found instanceof BaseInstance)) throw new InvalidArgument('publish needs an instance of this host, or its name');
      return found;
    },
    release,
  });
}
