export { DEFAULT_SOCKET, LxdClient, lxdError } from './client';
export type { LxdEndpoint, LxdErrorDetails, LxdResponse, RequestOptions } from './client';
export { RemoteHost } from './host';
export { RemoteInstance } from './instance';
export type { ClusterMember, ConnectOptions, RemoteCopyOptions, RemoteCreateOptions, RemoteLaunchOptions } from './host';
export { RemoteImages } from './images';
export type { CopyImageOptions, RemoteImageInfo } from './images';
