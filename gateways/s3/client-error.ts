/**
 * Errors Node's HTTP parser meets before a request reaches the gateway's
 * route (fastify's clientErrorHandler): answered as S3 XML, like every other
 * error, instead of fastify's JSON. The one S3 clients meet: a body cut short
 * by a connection the client half-closed (IncompleteBody). Then the socket is
 * closed: the request was never whole.
 */
import type { Socket } from 'node:net';
import { escapeXml } from './xml.js';

const answers: Record<string, { status: number; reason: string; code: string; message: string }> = {
  HPE_INVALID_EOF_STATE: { status: 400, reason: 'Bad Request', code: 'IncompleteBody', message: 'You did not provide the number of bytes specified by the Content-Length HTTP header.' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 400, reason: 'Bad Request', code: 'RequestTimeout', message: 'Your socket connection to the server was not read from or written to within the timeout period.' },
  HPE_HEADER_OVERFLOW: { status: 400, reason: 'Bad Request', code: 'RequestHeaderSectionTooLarge', message: 'Your request header section exceeds the maximum allowed size.' },
};
const other = { status: 400, reason: 'Bad Request', code: 'BadRequest', message: 'The request could not be parsed.' };

export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  // A reset connection is gone already: nothing to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (socket.writable) {
    const a = answers[err.code ?? ''] ?? other;
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${a.code}</Code><Message>${escapeXml(a.message)}</Message></Error>`;
    socket.write(`HTTP/1.1 ${a.status} ${a.reason}\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(err);
}
