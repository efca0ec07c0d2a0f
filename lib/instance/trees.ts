/**
 * Directory trees as tar streams, once for every driver, over the file primitives of
 * InstanceFiles. A driver's files class extends TreeFiles and gets pullTree and pushTree.
 */
import type { Readable } from 'node:stream';

import { NotSupported } from '../core/errors';
import type { DirEntry, FileStat, InstanceFiles, OwnerOptions, PullTreeOptions, TreeOptions, WriteOptions } from './files';

export abstract class TreeFiles implements InstanceFiles {
  abstract read(path: string): Promise<Buffer>;
  abstract write(path: string, data: string | Buffer, options?: WriteOptions): Promise<void>;
  abstract push(hostPath: string, path: string, options?: WriteOptions): Promise<void>;
  abstract pull(path: string, hostPath: string): Promise<void>;
  abstract stat(path: string): Promise<FileStat>;
  abstract list(path: string): Promise<DirEntry[]>;
  abstract mkdir(path: string, options?: WriteOptions & { parents?: boolean }): Promise<void>;
  abstract remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  abstract symlink(target: string, path: string, options?: OwnerOptions): Promise<void>;
  abstract readlink(path: string): Promise<string>;
  abstract utimes(path: string, atime: Date, mtime: Date): Promise<void>;

  // Temporary (landing next, same session): the contract is on main first so the VM side can build on it.
  async pullTree(_path: string, _options?: PullTreeOptions): Promise<Readable> {
    throw new NotSupported('pullTree is not yet implemented');
  }

  async pushTree(_path: string, _tar: Readable, _options?: TreeOptions): Promise<void> {
    throw new NotSupported('pushTree is not yet implemented');
  }
}
