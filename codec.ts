/**
 * The RTCP wire codec (`@x/rtcp/codec`): messages, their text encoding
 * (PROTOCOL.md Parts 1 and 2) as Web Streams, and the byte queue a codec
 * decodes from. For tools that speak RTCP themselves (a test peer, a proxy, a
 * traffic dump); `listen()`, `connect()` and `DiscoverPoint` in `@x/rtcp` do
 * not need any of it.
 *
 * @example Decode the messages in a captured byte stream
 * ```ts
 * import { type Message, MessageDecoderStream, MessageEncoderStream, MessageType } from "@x/rtcp/codec";
 *
 * const messages: Message[] = [{ type: MessageType.Connect, name: "echo" }];
 * const decoded = await Array.fromAsync(
 *   ReadableStream.from(messages)
 *     .pipeThrough(new MessageEncoderStream())
 *     .pipeThrough(new MessageDecoderStream()),
 * );
 * console.log(decoded); // [{ type: 1, name: "echo" }]
 * ```
 * @module
 */

export {
  MAX_DATA_BYTES,
  MAX_LINE_BYTES,
  MessageDecoderStream,
  MessageEncoderStream,
  TextCodec,
} from "./lib/wire/codec.ts";
export type {
  Codec,
  MessageDecoderOptions,
  MessageEncoderStreamOptions,
  TextCodecOptions,
} from "./lib/wire/codec.ts";
export { ByteQueue } from "./lib/wire/_bytes.ts";
export { MessageType, Role, VERSION } from "./lib/wire/message.ts";
export type {
  AcceptedMessage,
  AckMessage,
  AlohaMessage,
  AuthMessage,
  CloseMessage,
  ConnectMessage,
  CreditMessage,
  DataMessage,
  EndMessage,
  Message,
  MoreMessage,
  PingMessage,
  PongMessage,
  PortMessage,
} from "./lib/wire/message.ts";
export { ProtocolError } from "./lib/errors.ts";
