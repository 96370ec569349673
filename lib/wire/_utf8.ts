/**
 * UTF-8 for the text codec's control messages: a Connect, an Ack or a Close
 * is a few dozen bytes of ASCII, and converting those in JavaScript is
 * cheaper than a call into the runtime's encoder or decoder, which longer or
 * non-ASCII text still takes.
 * @module
 */

/** Longest text converted here; longer text goes to the runtime. */
const SHORT_TEXT = 256;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decodes `bytes` as UTF-8, strictly.
 * @throws {TypeError} When they are not valid UTF-8.
 */
export function decodeUtf8(bytes: Uint8Array): string {
  if (bytes.length <= SHORT_TEXT && isAscii(bytes)) {
    return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  return decoder.decode(bytes);
}

/** Encodes `text` as UTF-8. */
export function encodeUtf8(text: string): Uint8Array {
  if (text.length > SHORT_TEXT) return encoder.encode(text);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return encoder.encode(text);
    bytes[i] = code;
  }
  return bytes;
}

function isAscii(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0x80) return false;
  return true;
}
