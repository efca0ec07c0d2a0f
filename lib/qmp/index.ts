/**
 * `lxq/qmp`: a QMP client and a QEMU guest-agent client over unix sockets. Independent of lxq.
 */
export { QmpError, QmpCommandError, QmpTimeoutError, QmpAbortError, QmpConnectionError, QmpProtocolError } from './errors';
export { JsonConnection, DEFAULT_TIMEOUT, type JsonObject, type Target, type ExpectOptions, type ConnectionEvents } from './connection';
export {
  QmpClient,
  type QmpClientEvents,
  type QmpConnectOptions,
  type QmpExecuteOptions,
  type QmpEvent,
  type QmpKnownEvents,
  type QmpEventData,
  type QmpWaitEventOptions,
  type QmpGreeting,
} from './qmp';
export type { QmpCommands, QmpPciDeviceInfo, QmpStatusInfo, QmpVersionInfo } from './commands';
export { QgaClient, type QgaClientEvents, type QgaConnectOptions, type QgaExecuteOptions } from './qga';
